"""The KD prompts: an even share of --kd-max-sequences for each suite that has prompts to generate from."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from harness.kd_extras import kd_prompt_list, kd_prompt_owners


@dataclass
class FakeSuite:
    name: str
    prompts: list[str]

    def info(self) -> Any:
        return SimpleNamespace(name=self.name)

    def kd_prompts(self, render: Any = None) -> list[str]:
        return list(self.prompts)


class Renderer:
    def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True) -> str:
        raise AssertionError("not called by the fakes")


def _run(max_sequences: int, *suites: FakeSuite) -> Any:
    return SimpleNamespace(suites=list(suites), config=SimpleNamespace(kd_max_sequences=max_sequences))


def test_a_suite_without_prompts_takes_no_share() -> None:
    mc = FakeSuite("mc", [])  # multiple choice: nothing to generate
    gen = FakeSuite("gen", [f"g{i}" for i in range(10)])
    other = FakeSuite("other", [f"o{i}" for i in range(10)] + ["g0"])
    assert kd_prompt_list(_run(6, mc, gen), Renderer()) == [f"g{i}" for i in range(6)]
    owners = kd_prompt_owners(_run(6, gen, mc, other), Renderer())
    assert list(owners) == ["g0", "g1", "g2", "o0", "o1", "o2"]
    assert owners["g0"] == "gen" and owners["o2"] == "other"
    assert kd_prompt_list(_run(6, mc), Renderer()) == []
