"""Which feature-log topic training reads: the domain's own, never the feed's by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from services.core.settings import Settings, domain_folder
from services.training.log_reader import feature_log_topic


def test_a_domain_without_a_feature_log_topic_reads_no_log(tmp_path: Path) -> None:
    folder = tmp_path / "rides"
    shutil.copytree(domain_folder("delivery"), folder)
    declared = json.loads((folder / "domain.json").read_text())
    assert feature_log_topic(Settings(domain=str(folder))) == "delivery.feature-log.v1"
    del declared["topics"]["feature_log"]
    (folder / "domain.json").write_text(json.dumps(declared))
    settings = Settings(domain=str(folder))
    assert settings.topics.feature_log == "feed.feature-log.v1"  # the setting's default
    assert feature_log_topic(settings) is None  # ... which is the feed's log, not this domain's
    chosen = Settings(domain=str(folder), topics={"feature_log": "rides.feature-log.v1"})
    assert feature_log_topic(chosen) == "rides.feature-log.v1"
    assert feature_log_topic(Settings(domain="feed")) == "feed.feature-log.v1"
