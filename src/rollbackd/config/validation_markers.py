"""What the config's dataclasses tell pydantic, written as plain ``Annotated`` metadata that imports nothing.

The daemon keeps the config's classes for its whole life, and pydantic with its validator costs ~10 MiB of RSS
(issue 13): so the classes are stdlib dataclasses and these markers say how to validate a field. pydantic reads
each marker's ``__get_pydantic_core_schema__`` only when it builds the config's validator (config/validation.py,
or its ``TypeAdapter`` in the tests that hold the two to the same schema), the one time ``pydantic_core`` is
imported. Constraints give pydantic's own error types, so the messages stay pydantic's
("Input should be greater than or equal to 100"); ``config/reference.py`` reads the same markers for
docs/CONFIG.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema
    from pydantic_core.core_schema import ErrorType

_FUNCTION_SCHEMAS = ("function-before", "function-after", "function-wrap")


class Before:
    """Run ``func`` on the raw value before the type is checked (a duration string into seconds)."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(self.func, handler(source))


class After:
    """Run ``func`` on the checked value: it returns the value to keep or raises ValueError with the message."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.func, handler(source))


class ShownAs:
    """Print the value back through ``func`` (seconds as "5s", bytes as "512MiB") when the config is dumped."""

    def __init__(self, func: Callable[[Any], str]) -> None:
        self.func = func

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        schema = dict(handler(source))
        schema["serialization"] = core_schema.plain_serializer_function_ser_schema(
            self.func, return_schema=core_schema.str_schema()
        )
        return schema


class Lax:
    """Accept what strict mode refuses and TOML can only write this way (a path as a string, an int for a float,
    an array for a tuple)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _lax(handler(source))


def _lax(schema: CoreSchema) -> CoreSchema:
    """As pydantic's ``Strict(False)``: a validator function's inner schema is the one made lax."""
    if schema["type"] in _FUNCTION_SCHEMAS:
        return {**schema, "schema": _lax(schema["schema"])}
    return {**schema, "strict": False}


class _Limit:
    """A bound on a number, applied as pydantic applies ``Field(ge=...)``: on the number's own schema, or after
    a validator function that makes the number, with the same error type and message."""

    constraint: ClassVar[str]  # "ge": the core schema's key, the error's context key
    error_type: ClassVar[ErrorType]  # "greater_than_equal": pydantic's error type

    def __init__(self, value: float) -> None:
        self.value = value

    def holds(self, number: Any) -> bool:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import PydanticKnownError, core_schema

        schema = handler(source)
        if schema["type"] in ("int", "float"):
            return {**schema, self.constraint: self.value}

        def bounded(number: Any) -> Any:
            if not self.holds(number):
                raise PydanticKnownError(self.error_type, {self.constraint: self.value})
            return number

        return core_schema.no_info_after_validator_function(bounded, schema)


class Ge(_Limit):
    constraint = "ge"
    error_type = "greater_than_equal"

    def holds(self, number: Any) -> bool:
        return bool(number >= self.value)


class Gt(_Limit):
    constraint = "gt"
    error_type = "greater_than"

    def holds(self, number: Any) -> bool:
        return bool(number > self.value)


class Le(_Limit):
    constraint = "le"
    error_type = "less_than_equal"

    def holds(self, number: Any) -> bool:
        return bool(number <= self.value)


class Lt(_Limit):
    constraint = "lt"
    error_type = "less_than"

    def holds(self, number: Any) -> bool:
        return bool(number < self.value)


class MinLen:
    """At least ``min_length`` items in a list, or characters in a string."""

    def __init__(self, min_length: int) -> None:
        self.min_length = min_length

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if schema["type"] not in ("str", "list", "tuple", "dict"):
            raise TypeError(f"MinLen applies to a string, list, tuple or table, not a {schema['type']} schema")
        return {**schema, "min_length": self.min_length}


class Tagged:
    """A union of dataclasses told apart by the value of one key (``kind = "systemd"``, ``type = "s3"``): each
    class's ``Literal`` type for that key names its tag, as pydantic's ``Field(discriminator=key)`` reads it."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        import typing

        from pydantic_core import core_schema

        choices: dict[Any, CoreSchema] = {}
        for member in typing.get_args(source):
            schema = handler.generate_schema(member)
            for tag in typing.get_args(typing.get_type_hints(member)[self.key]):
                choices[tag] = schema
        # strict=False and from_attributes as pydantic's discriminated unions are built (a dict or an instance)
        return core_schema.tagged_union_schema(choices, self.key, strict=False, from_attributes=True)
