"""One vLLM release, named alike wherever an image is chosen (issue 14)."""

from __future__ import annotations

import re

from app.core.config import GATEWAY_DIR, VLLM_IMAGE, Settings


def test_compose_env_sample_and_settings_pin_the_same_release() -> None:
    root = GATEWAY_DIR.parent
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", VLLM_IMAGE)
    compose = (root / "docker-compose.yml").read_text()
    defaults = re.findall(r"\$\{VLLM_IMAGE:-([^}]+)\}", compose)
    assert defaults and set(defaults) == {VLLM_IMAGE}
    sample = (root / ".env.sample").read_text()
    assert f"\nVLLM_IMAGE={VLLM_IMAGE}\n" in sample
    assert Settings(_env_file=None).vllm_image == VLLM_IMAGE  # type: ignore[call-arg]
    assert ":latest" not in "".join(defaults)
