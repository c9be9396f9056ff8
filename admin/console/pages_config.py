from typing import Any

HANDLERS: list[Any] = []
