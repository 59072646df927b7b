"""The one ValidationError -> ConfigError translation: owner, dotted field, value, expectation."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from privrank.config_errors import config_error, expected_of_field
from privrank.errors import ConfigError, ConfigProblem


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(1.0, gt=0)
    clip: float | None = Field(None, ge=0)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factors: int = Field(8, ge=1)
    dtype: Literal["float32", "float64"] = "float32"
    name: str
    private: Block | None = None
    budget: int | None = None

    @model_validator(mode="after")
    def _checks(self) -> Outer:
        if self.budget == 13:
            raise ValueError("budget 13 is unlucky; pick another")
        return self


def _error(owner: str = "Model", **data: object) -> ConfigError:
    try:
        Outer(**data)  # type: ignore[arg-type]
    except ValidationError as exc:
        return config_error(exc, owner, model=Outer)
    raise AssertionError("no validation error")


def test_a_bad_value_names_owner_field_value_and_expectation() -> None:
    error = _error(name="x", factors=0)
    assert str(error) == "Model.factors: got 0; expected an int >= 1"
    assert error.problems == (ConfigProblem(("factors",), 0, "expected an int >= 1"),)


def test_nested_fields_are_named_by_their_dotted_path() -> None:
    error = _error(name="x", private={"noise_multiplier": -1})
    assert str(error) == "Model.private.noise_multiplier: got -1; expected a float > 0"


def test_literals_optionals_and_missing_fields() -> None:
    assert str(_error(dtype="half")).split(" | ") == [
        "Model.dtype: got 'half'; expected one of 'float32', 'float64'",
        "Model.name: got nothing; expected a value (the field is required)",
    ]
    error = _error(name="x", private={"clip": -2})
    assert str(error) == "Model.private.clip: got -2; expected a float >= 0 or None"


def test_unknown_keys_list_the_known_ones_and_take_a_hint() -> None:
    error = _error(name="x", factor=3)
    assert str(error) == (
        "Model.factor: got 3; Model has no parameter 'factor'; "
        "expected one of: factors, dtype, name, private, budget"
    )
    nested = _error(name="x", private={"sigma": 1})
    assert str(nested) == (
        "Model.private.sigma: got 1; Model.private has no parameter 'sigma'; "
        "expected one of: noise_multiplier, clip"
    )
    try:
        Outer(name="x", factor=3)  # type: ignore[call-arg]
    except ValidationError as exc:
        hinted = config_error(exc, "Model", model=Outer, hint=lambda path: f"try {path[0]}s")
    assert str(hinted).endswith("; try factors")


def test_a_validator_s_own_words_are_the_rule() -> None:
    error = _error(name="x", budget=13)
    assert str(error) == "Model: budget 13 is unlucky; pick another"  # no dump of the config
    assert error.problems[0].value == {"name": "x", "budget": 13}


def test_without_a_model_pydantic_s_words_become_the_expectation() -> None:
    try:
        Outer(name="x", factors="many")  # type: ignore[arg-type]
    except ValidationError as exc:
        error = config_error(exc, "run.toml")
    assert str(error).startswith("run.toml.factors: got 'many'; expected a valid integer")


def test_command_line_options_are_named_first_and_long_values_are_cut() -> None:
    try:
        Outer(name="x" * 200, factors=0, private=[1] * 100)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = config_error(exc, "Model", model=Outer, options={"factors": "--factors"})
    first, second = str(error).split(" | ")
    assert first == "--factors (Model.factors): got 0; expected an int >= 1"
    assert second.startswith("Model.private: got [1, 1,") and "...;" in second
    assert len(second.split(";")[0]) < 110


def test_a_url_s_password_is_never_shown() -> None:
    try:
        Outer(name="x", factors="postgresql://me:s3cret@db/x")  # type: ignore[arg-type]
    except ValidationError as exc:
        error = config_error(exc, "Model", model=Outer)
    assert "s3cret" not in str(error)
    assert str(error).startswith("Model.factors: got 'postgresql://me:***@db/x'; expected an int")


def test_problems_of_a_nested_config_error_are_flattened() -> None:
    class Wrapper(BaseModel):
        inner: dict[str, int]

        @model_validator(mode="after")
        def _inner(self) -> Wrapper:
            try:
                Outer(name="x", **self.inner)  # type: ignore[arg-type]
            except ValidationError as exc:
                raise config_error(exc, "Outer", model=Outer) from None
            return self

    with pytest.raises(ValidationError) as caught:
        Wrapper(inner={"factors": 0})
    error = config_error(caught.value, "Wrapper")
    assert str(error) == "Wrapper.factors: got 0; expected an int >= 1"


def test_expected_of_field_gives_up_on_composite_types() -> None:
    assert expected_of_field(Outer.model_fields["private"]) is None
    assert expected_of_field(Outer.model_fields["budget"]) == "an int or None"
