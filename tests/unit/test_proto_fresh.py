"""Generated protobuf code matches protos/ioswarm.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_not_stale() -> None:
    """Regenerating from protos/ gives exactly the committed ioswarm/proto files."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_service_keeps_reference_method_paths() -> None:
    """The service is ioswarm.IOSwarm with the reference methods plus DownloadSnapshot."""
    from ioswarm.proto import ioswarm_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["IOSwarm"]
    assert service.full_name == "ioswarm.IOSwarm"
    assert [m.name for m in service.methods] == [
        "Register",
        "GetTasks",
        "SubmitResults",
        "Heartbeat",
        "StreamStateDiffs",
        "DownloadSnapshot",
    ]
