"""The README's screenshot of the live view is taken here, offscreen, and checked in."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOT = ROOT / "docs" / "view.png"


@pytest.mark.timeout(120)
def test_readme_screenshot_of_a_running_simulated_session():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run(
        [sys.executable, "-m", "closedloop", "view", "--demo", "4", "--screenshot", str(SHOT)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(SHOT)
    assert img.shape[0] >= 600 and img.shape[1] >= 900
    # a real picture: many distinct colours, not a blank or single-colour window
    flat = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(flat[:: max(1, flat.shape[0] // 20000)], axis=0)) > 50
    assert "view.png" in (ROOT / "README.md").read_text()
