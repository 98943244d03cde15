"""`prov verify --replay all --jobs N`: segments replayed in N worker processes at once give the same verdict and
the same per-segment results as one worker, and a tampered segment is still found (and named) in parallel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="replay needs the train extra (scripts/setup installs it)")

from provenance.errors import UsageError
from provenance.verify import VerifyOptions
from tests.fixtures.verify import VerifyEnv, data_options, failed, last

pytestmark = pytest.mark.replay


def _segments(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(s["to_index"], s["steps"], s["status"], s["bitwise"], s["weight_distance"])
            for s in report["replay"]["segments"]]


def test_two_jobs_give_the_same_verdict_as_one(tmp_path: Path, tiny_run: Any, tiny_model_dir: Path) -> None:
    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    adapter = last(run) / "adapter_model.safetensors"
    one = env.verify(adapter, replay="all", jobs=1, **data_options(run, tiny_model_dir))
    two = env.verify(adapter, replay="all", jobs=2, **data_options(run, tiny_model_dir))
    assert one["verdict"] == two["verdict"] == "verified", (failed(one), failed(two))
    assert one["level"] == two["level"] and one["level"]["name"] == "full"
    assert _segments(one) == _segments(two) and len(_segments(two)) == 4  # checkpoint 0 and 3 segments
    with pytest.raises(UsageError, match="--jobs"):
        VerifyOptions(jobs=0)
