"""The `openai:` model spec and the backend's options: parsing, labels, and secrets kept out of specs."""

from __future__ import annotations

import pytest

from harness.backends import parse_model_spec
from harness.backends.openai_spec import OpenAIOptions, build_options, parse_openai_spec
from harness.config import check_model_path
from harness.errors import HarnessError


def test_spec_with_name_and_options() -> None:
    spec = parse_openai_spec("http://127.0.0.1:8000/v1/#teacher?logprobs=0&max_concurrency=4")
    assert spec.urls == ("http://127.0.0.1:8000/v1",)
    assert spec.model == "teacher"
    assert spec.options == {"logprobs": "0", "max_concurrency": "4"}
    assert spec.label == "teacher"


def test_several_endpoints_and_label_from_host_without_name() -> None:
    spec = parse_openai_spec("http://10.0.0.1:8000/v1,http://10.0.0.2:8001/v1")
    assert spec.urls == ("http://10.0.0.1:8000/v1", "http://10.0.0.2:8001/v1")
    assert spec.model == ""
    assert spec.label == "10.0.0.1-8000"
    assert parse_openai_spec("http://h:1/v1?timeout=5").options == {"timeout": "5"}


def test_model_spec_label_is_the_served_name() -> None:
    spec = parse_model_spec("openai:http://127.0.0.1:8000/v1#org/teacher-7b?logprobs=0")
    assert (spec.backend, spec.label) == ("openai", "teacher-7b")
    assert spec.path == "http://127.0.0.1:8000/v1#org/teacher-7b?logprobs=0"
    check_model_path("teacher", spec)  # a URL is not checked as a folder


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "names no URL"),
        ("ftp://h/v1#m", r"not an http\(s\) URL"),
        ("http://user:pw@h:1/v1#m", "credentials in the URL"),
        ("http://h:1/v1,http://h:1/v1#m", "same URL twice"),
        ("http://h:1/v1?x=1#m", "put options after the model name"),
    ],
)
def test_bad_specs_say_what_to_write(text: str, fragment: str) -> None:
    with pytest.raises(HarnessError, match=fragment):
        parse_openai_spec(text)


def test_options_from_spec_override_engine_args_and_unknown_engine_args_are_listed() -> None:
    options, ignored = build_options({"timeout": "3"}, {"timeout": 9, "retries": 2, "dtype": "float32"})
    assert options.timeout == 3.0
    assert options.retries == 2
    assert ignored == ["dtype"]
    options, _ = build_options({"probe": "false", "api": "chat"}, {})
    assert options.probe is False and options.api == "chat"


@pytest.mark.parametrize(
    ("spec_options", "fragment"),
    [
        ({"colour": "red"}, "'colour' is not known"),
        ({"timeout": "soon"}, "expected a float"),
        ({"max_concurrency": "0"}, "max_concurrency=0"),
        ({"api": "grpc"}, "api='grpc'"),
        ({"logprobs": "-2"}, "logprobs=-2"),
        ({"probe": "maybe"}, "expected a bool"),
    ],
)
def test_bad_options_are_one_line_errors(spec_options: dict[str, str], fragment: str) -> None:
    with pytest.raises(HarnessError, match=fragment):
        build_options(spec_options, {})


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "token", "authorization"])
def test_keys_are_refused_in_specs_and_engine_args_without_echoing_them(key: str) -> None:
    for spec_options, engine_args in (({key: "sk-SECRET"}, {}), ({}, {key: "sk-SECRET"})):
        with pytest.raises(HarnessError) as info:
            build_options(spec_options, engine_args)
        assert "environment" in str(info.value)
        assert "sk-SECRET" not in str(info.value)


def test_default_options_are_bounded() -> None:
    opts = OpenAIOptions()
    assert opts.timeout > 0 and opts.retries >= 1 and opts.max_concurrency >= 1
    assert opts.api_key_env == "OPENAI_API_KEY"
