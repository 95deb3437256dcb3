"""Options of `cellvit-trt run --ray`: where the cluster is and how slides are placed on it (light module).

scale = ScaleSettings.from_args(args)         # None without --ray
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cellvit_trt.errors import ConfigError

LOCAL = "local"  # `--ray` without ADDRESS: start a Ray instance on this machine (or join $RAY_ADDRESS)
# ADDRESS as `ray.init` takes it: auto, ray://host:port (Ray Client), host:port or ip:port (GCS)
_ADDRESS = re.compile(r"^(auto|local|ray://[\w.\-\[\]:]+|[\w.\-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5})$")


@dataclass(frozen=True)
class ScaleSettings:
    address: str = LOCAL
    cpus_per_slide: float | None = None  # None: 4 (capped by the largest node) for GPU and CPU slides alike
    workers: int | None = None  # None: as many as the cluster's resources place at once
    retries: int = 3  # attempts after a worker died mid-slide (each continues from the slide's journal)
    stop_timeout_s: float = 60.0  # Ctrl-C: how long running slides get to stop cleanly before their kill

    def validate(self) -> None:
        if not _ADDRESS.match(self.address):
            raise ConfigError(
                f"--ray: {self.address!r} is not a Ray address (expected nothing, auto, ray://host:10001 or "
                "host:6379); if it is an input, put --ray after the inputs or write --ray=local"
            )
        if self.cpus_per_slide is not None and self.cpus_per_slide <= 0:
            raise ConfigError(f"--ray-cpus-per-slide: got {self.cpus_per_slide}, expected > 0")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--ray-workers: got {self.workers}, expected >= 1")
        if self.retries < 0:
            raise ConfigError(f"--ray-retries: got {self.retries}, expected >= 0")

    @classmethod
    def from_args(cls, args: Any) -> ScaleSettings | None:
        address = getattr(args, "ray", None)
        if address is None:
            return None
        given = {
            "cpus_per_slide": getattr(args, "ray_cpus_per_slide", None),
            "workers": getattr(args, "ray_workers", None),
            "retries": getattr(args, "ray_retries", None),
        }
        s = cls(address=address, **{k: v for k, v in given.items() if v is not None})
        s.validate()
        return s
