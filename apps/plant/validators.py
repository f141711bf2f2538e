"""The rules of a machine's setpoint fields, in one place.

The setpoint form and the workbook row rules both call these, so an operator
reads the same message whichever way a value came in. Each takes the `label`
the user knows the field by (the form's "Target speed", the workbook's
"Target Speed" column).
"""

import math
import re
from decimal import Decimal

from django.core.exceptions import ValidationError

from .models import Machine

TARGET_SPEED_MIN, TARGET_SPEED_MAX = 0, 3000
# Plain ASCII digits only: no exponent, no underscores, no full-width or
# other Unicode digits, no spaces inside, no NaN or infinity.
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def _shown(value, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _looks_numeric(text: str) -> bool:
    """Python would read it as a number (1e3, 1_500, １５００, nan), the rule does not."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return any(c.isdigit() for c in text)


def target_speed_clean(value, label: str = "Target speed") -> int:
    """The target speed as a whole number of rpm from 0 to 3000.

    Takes an int, a float cell (1500.0) or text ("1500", "1500.0"); raises
    ValidationError with the message to show otherwise.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationError(f"{label} is empty.", code="required")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"{label} must be a number, not {_shown(value)!r}.", code="invalid")
    if isinstance(value, str):
        text = value.strip()
        if not _PLAIN_NUMBER.fullmatch(text):
            if _looks_numeric(text):
                message = f"{label} must be written with the digits 0–9 only (like 1500), not"
            else:
                message = f"{label} must be a number, not"
            raise ValidationError(f"{message} {_shown(text)!r}.", code="invalid")
        number = Decimal(text)
        if number != number.to_integral_value():
            raise ValidationError(
                f"{label} must be a whole number, not {_shown(text)}.", code="fraction"
            )
        number = int(number)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(
                f"{label} must be a number, not {_shown(value)!r}.", code="invalid"
            )
        if not value.is_integer():
            raise ValidationError(
                f"{label} must be a whole number, not {value:g}.", code="fraction"
            )
        number = int(value)
    else:
        number = value
    if not TARGET_SPEED_MIN <= number <= TARGET_SPEED_MAX:
        raise ValidationError(
            f"{label} must be from {TARGET_SPEED_MIN} to {TARGET_SPEED_MAX}, not {number}.",
            code="range",
        )
    return number


def mode_clean(value, label: str = "Mode") -> str:
    """One of the machine's modes (Machine.Mode), case and outer spaces ignored."""
    text = str(value).strip().upper()
    if text not in Machine.Mode.values:
        raise ValidationError(
            f"{label} must be one of {', '.join(Machine.Mode.values)}, not {_shown(value)!r}.",
            code="invalid_choice",
        )
    return text
