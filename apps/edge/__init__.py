"""The edge gateway agent and plant simulator (`manage.py run_gateway`).

simulator.py  machines and sensor signals (pure, seeded)
queue.py      the durable offline queue (SQLite) with its quarantine
sender.py     one HTTP POST and what its answer means; backoff
agent.py      the producer and sender threads that tie them together
commands.py   the command channel: setpoints from the server over a WebSocket
plant.py      what to simulate, as the server's GET /api/v1/gateway tells it

The agent reaches the server only over HTTP and WebSocket and imports no
server app, so it runs the same on a gateway box as beside the server
(tests/edge/test_boundary.py holds it to that).
"""
