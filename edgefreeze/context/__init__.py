"""What every stage of a run shares: where progress goes, the device, and this process's
place among the processes that train together. One value, passed instead of three
arguments to every stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from pydantic import ValidationError

from edgefreeze.context.device import resolve_device
from edgefreeze.context.world import World, join_world
from edgefreeze.errors import EdgefreezeError
from edgefreeze.progress import Reporter


@dataclass(frozen=True)
class RunContext:
    """Args:
    reporter: progress and messages (quiet on every process but the leader).
    device: where the model trains and PyTorch's reference outputs are computed.
    world: this process among those torchrun started (a world of one otherwise).
    """

    reporter: Reporter
    device: torch.device = torch.device("cpu")
    world: World = World()

    @classmethod
    def start(cls, requested_device: str, reporter: Reporter) -> RunContext:
        """Resolve the device and join the process world; followers report nothing."""
        device = resolve_device(requested_device)
        world = join_world(device)
        return cls(
            reporter=reporter if world.leader else Reporter(quiet=True), device=device, world=world
        )

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A timed stage (`Reporter.stage`) whose records are checked where they are made:
        a record that does not fit the manifest's schema (a misspelt key, a wrong type)
        fails at the end of its own stage, naming it and the key, not after training,
        export and quantization when the manifest is assembled."""
        with self.reporter.stage(name):
            try:
                yield
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in (exc.title, *error['loc']))}: {error['msg']}"
                    for error in exc.errors()
                )
                raise EdgefreezeError(
                    f"the {name} stage's record does not fit the manifest's schema: "
                    f"{problems} (a bug in edgefreeze or in a registered task or plan)"
                ) from None

    def quiet(self) -> RunContext:
        """The same run with no progress output (a sweep's trials)."""
        return replace(self, reporter=Reporter(quiet=True))


__all__ = ["RunContext", "World", "join_world", "resolve_device"]
