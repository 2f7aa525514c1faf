"""The config classes' validator and dumper, built by pydantic-core from the dataclasses' own fields.

pydantic builds the same schema with its ``TypeAdapter``, but its Python layer (its import, its schema
generation, its plugin discovery through ``importlib.metadata``) cost ~0.1 s of every `rollbackd status` and
`check-config` on the project's machine, where the config's validation itself takes under a millisecond (issue
13). The config's classes use few kinds of field (str, int, float, bool, Path, Literal, list, tuple, dict, None
unions, tagged unions of classes, nested classes, ``Annotated`` markers), so this module writes their core
schema directly, the shape pydantic gives it, and pydantic-core validates and dumps: same engine, same error
types and messages. ``tests/config/test_validation.py`` holds the two builders to the same schema and the same
results, field for field, against pydantic's ``TypeAdapter`` (pydantic stays the reference).

The markers (config/validation_markers.py) and a class's own ``__get_pydantic_core_schema__`` are called as
pydantic calls them, with a handler that builds the schema of what they wrap.
"""

from __future__ import annotations

import dataclasses
import pathlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic_core import PydanticCustomError, SchemaSerializer, SchemaValidator, core_schema

if typing.TYPE_CHECKING:
    from pydantic_core import CoreConfig, CoreSchema

# The class's ``__pydantic_config__`` keys this builder understands, as pydantic turns them into core config.
_CONFIG_KEYS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "extra": lambda value: {"extra_fields_behavior": value},
    "strict": lambda value: {"strict": value},
    "populate_by_name": lambda value: {"validate_by_name": value, "validate_by_alias": True},
}


class SchemaHandler:
    """What pydantic hands a marker's or a class's ``__get_pydantic_core_schema__``: called with a type, it
    returns that type's schema with the markers inside this one applied; ``generate_schema`` starts afresh."""

    def __init__(self, build: Callable[[Any], CoreSchema], builder: SchemaBuilder) -> None:
        self._build = build
        self._builder = builder

    def __call__(self, source: Any) -> CoreSchema:
        return self._build(source)

    def generate_schema(self, source: Any) -> CoreSchema:
        return self._builder.schema_of(source)

    def resolve_ref_schema(self, schema: CoreSchema) -> CoreSchema:
        return schema  # every schema here is inline: the config's classes do not refer to themselves


class SchemaBuilder:
    """Builds the core schema of a type, each dataclass once."""

    def __init__(self) -> None:
        self._classes: dict[type, CoreSchema] = {}

    def schema_of(self, source: Any) -> CoreSchema:
        """The schema of ``source`` (a type, or an ``Annotated`` one), as pydantic's GenerateSchema gives it."""
        if typing.get_origin(source) is Annotated:
            inner, *markers = typing.get_args(source)
            return self._annotated(inner, markers)
        hook = getattr(source, "__get_pydantic_core_schema__", None)
        if isinstance(source, type) and dataclasses.is_dataclass(source):
            schema = self._classes.get(source)
            if schema is None:
                plain = SchemaHandler(self._dataclass_schema, self)
                schema = self._classes[source] = hook(source, plain) if hook is not None else plain(source)
            return schema
        return self._plain(source)

    def _annotated(self, inner: Any, markers: list[Any]) -> CoreSchema:
        """``inner`` with ``markers`` applied in order: each marker's handler applies the ones before it."""
        build: Callable[[Any], CoreSchema] = self.schema_of
        for marker in markers:
            hook = getattr(marker, "__get_pydantic_core_schema__", None)
            if hook is None:
                raise TypeError(f"{marker!r} is not a validation marker (config/validation_markers.py)")
            build = _wrapped(hook, SchemaHandler(build, self))
        return build(inner)

    def _plain(self, source: Any) -> CoreSchema:
        origin, arguments = typing.get_origin(source), typing.get_args(source)
        if source is str:
            return core_schema.str_schema()
        if source is bool:
            return core_schema.bool_schema()
        if source is int:
            return core_schema.int_schema()
        if source is float:
            return core_schema.float_schema()
        if source is Any:
            return core_schema.any_schema()
        if source is pathlib.Path:
            return _path_schema()
        if origin is Literal:
            return core_schema.literal_schema(list(arguments))
        if origin is list:
            return core_schema.list_schema(self.schema_of(arguments[0]))
        if origin is dict:
            return core_schema.dict_schema(self.schema_of(arguments[0]), self.schema_of(arguments[1]))
        if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
            return core_schema.tuple_schema([self.schema_of(arguments[0])], variadic_item_index=0)
        if origin in (Union, types.UnionType):
            members = [member for member in arguments if member is not type(None)]
            if len(members) > 1:  # pydantic's smart-mode union has rules of its own, and no config field needs it
                raise TypeError(f"no schema for the untagged union {source!r}: tag it (validation_markers.Tagged)")
            schema = self.schema_of(members[0])
            return core_schema.nullable_schema(schema) if len(members) < len(arguments) else schema
        raise TypeError(f"no schema for {source!r} in the config's classes: add it to config/validation.py")

    def _dataclass_schema(self, cls: type) -> CoreSchema:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = [self._field_schema(field, hints[field.name]) for field in dataclasses.fields(cls) if field.init]
        post_init = hasattr(cls, "__post_init__")
        return core_schema.dataclass_schema(
            cls,
            core_schema.dataclass_args_schema(cls.__name__, fields, computed_fields=[], collect_init_only=post_init),
            [field["name"] for field in fields],
            post_init=post_init,
            config=_core_config(cls),
            frozen=False,  # as pydantic builds a stdlib dataclass: it sets the fields itself, frozen or not
            slots=False,
        )

    def _field_schema(self, field: dataclasses.Field[Any], annotation: Any) -> core_schema.DataclassField:
        schema = self.schema_of(annotation)
        if field.default_factory is not dataclasses.MISSING:
            schema = core_schema.with_default_schema(
                schema, default_factory=field.default_factory, default_factory_takes_data=False
            )
        elif field.default is not dataclasses.MISSING:
            schema = core_schema.with_default_schema(schema, default=field.default)
        alias = field.metadata.get("alias")
        return core_schema.dataclass_field(
            field.name, schema, init=True, validation_alias=alias, serialization_alias=alias, metadata={}
        )


def _wrapped(hook: Callable[[Any, SchemaHandler], CoreSchema], handler: SchemaHandler) -> Callable[[Any], CoreSchema]:
    return lambda source: hook(source, handler)


def _core_config(cls: type) -> CoreConfig:
    """The class's ``__pydantic_config__`` as pydantic passes it to pydantic-core, titled with the class name."""
    config: dict[str, Any] = {"title": cls.__name__}
    for key, value in getattr(cls, "__pydantic_config__", {}).items():
        if key not in _CONFIG_KEYS:
            raise TypeError(f"{cls.__name__}.__pydantic_config__: {key!r} is not handled by config/validation.py")
        config.update(_CONFIG_KEYS[key](value))
    return typing.cast("CoreConfig", config)


def _path_schema() -> CoreSchema:
    """A ``pathlib.Path`` as pydantic validates one: an instance in strict mode, a string made a Path in lax mode,
    dumped as a string in JSON mode."""
    instance = core_schema.json_or_python_schema(
        json_schema=core_schema.no_info_after_validator_function(_path_validator, core_schema.str_schema()),
        python_schema=core_schema.is_instance_schema(pathlib.Path),
    )
    return core_schema.lax_or_strict_schema(
        lax_schema=core_schema.union_schema(
            [
                instance,
                core_schema.no_info_after_validator_function(_path_validator, core_schema.str_schema(strict=True)),
            ],
            custom_error_type="path_type",
            custom_error_message=f"Input is not a valid path for {pathlib.Path}",
        ),
        strict_schema=instance,
        serialization=core_schema.plain_serializer_function_ser_schema(_dumped_path, info_arg=True, when_used="always"),
    )


def _path_validator(value: str) -> pathlib.Path:
    try:
        return pathlib.Path(value)
    except TypeError as error:
        raise PydanticCustomError("path_type", "Input is not a valid path") from error


def _dumped_path(path: Any, info: core_schema.SerializationInfo) -> Any:
    return path if info.mode == "python" else str(path)


class Validators:
    """One validator and one dumper per class and process (building them is cheap, but the daemon's reload and a
    test validating fragments ask again and again)."""

    def __init__(self) -> None:
        self._builder = SchemaBuilder()
        self._validators: dict[type, SchemaValidator] = {}
        self._serializers: dict[type, SchemaSerializer] = {}

    def validator(self, cls: type) -> SchemaValidator:
        validator = self._validators.get(cls)
        if validator is None:
            validator = self._validators[cls] = SchemaValidator(self._builder.schema_of(cls))
        return validator

    def serializer(self, cls: type) -> SchemaSerializer:
        serializer = self._serializers.get(cls)
        if serializer is None:
            serializer = self._serializers[cls] = SchemaSerializer(self._builder.schema_of(cls))
        return serializer


def schema_of(source: Any) -> CoreSchema:
    """The core schema of ``source`` built afresh (for tests and tools; validation uses ``VALIDATORS``)."""
    return SchemaBuilder().schema_of(source)


VALIDATORS = Validators()


def dumped(cls: type, value: object) -> Mapping[str, Any]:
    """``value`` (an instance of ``cls``) as JSON-able data in the file's spelling: aliases, "5s", "512MiB"."""
    return typing.cast(Mapping[str, Any], VALIDATORS.serializer(cls).to_python(value, mode="json", by_alias=True))
