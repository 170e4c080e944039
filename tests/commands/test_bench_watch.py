"""bench --watch's own parts that need no cameras: the config it gives the service, and how it reads RSS samples
(the 20-minute soak's verdict rests on both)."""
from __future__ import annotations

from allinone.commands.bench_watch import _config, _rss_summary
from allinone.gallery.store import GalleryStore
from allinone.watch.config import load_watch_config


def test_the_bench_config_is_a_valid_watch_config_with_the_side_video_turned(tmp_path):
    GalleryStore(tmp_path / "people.sqlite", create=True).close()
    urls = [f"http://127.0.0.1:{9000 + i}/cam{i + 1}.ts" for i in range(5)]
    cfg = load_watch_config(_config(tmp_path, urls, tmp_path / "people.sqlite", "mqtt://127.0.0.1:1883"))
    assert [c.name for c in cfg.cameras] == ["cam1", "cam2", "cam3", "cam4", "cam5"]
    assert [c.source for c in cfg.cameras] == urls
    # the third video (demo5) is stored on its side; the fifth camera starts the list again (demo4, upright)
    assert [c.rotate for c in cfg.cameras] == [0, 0, 90, 0, 0]


def test_rss_spread_counts_only_samples_after_the_warm_up_and_within_the_run():
    # cameras start at 10 s; a 10-minute run warms up for a fifth of it (120 s) → samples from 130 s to 610 s
    samples = [(5.0, 500.0), (60.0, 900.0), (130.0, 1000.0), (300.0, 1040.0), (600.0, 1020.0), (700.0, 3000.0)]
    out = _rss_summary(samples, 10.0, 10.0)
    assert out["warm_up_until_s"] == 130.0
    assert out["rss_after_warm_up_mb"] == {"min": 1000.0, "max": 1040.0, "spread": 0.04, "first": 1000.0,
                                           "last": 1020.0}
    assert out["rss_mb_per_minute_max"] == {"0": 500.0, "1": 900.0, "2": 1000.0, "5": 1040.0, "10": 1020.0,
                                            "11": 3000.0}
