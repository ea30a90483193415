"""Every file under deploy/ and the Dockerfile checked offline by the tool that reads it:
promtool, the Kubernetes and compose-spec schemas shipped in PyPI packages, systemd-analyze,
the config loader, and the metric names a coordinator really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ioswarm.config import load_config, parse_config
from ioswarm.coordinator.metrics import CoordinatorMetrics
from ioswarm.core.tokens import agent_token
from ioswarm.rewards.settler import SettlerMetrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.37.0"
# PromQL words that look like metric names but are functions, keywords or label names.
PROMQL_WORDS = re.compile(r"ioswarm_[a-z0-9_]+|process_[a-z0-9_]+")


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} is not installed (make debs installs it)"
    return found


def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(
        list(args), cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_info")


def exported_families() -> set[str]:
    """Metric family names of a coordinator with settlement on (``ioswarm_tasks_dispatched``
    for ``ioswarm_tasks_dispatched_total``)."""
    registry = CollectorRegistry()
    metrics = CoordinatorMetrics(registry)
    SettlerMetrics(registry)
    metrics.watch_loops(lambda: {"blocks": {"state": "running"}})
    text = generate_latest(registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    # The parser shows an unlabelled counter's ``_created`` sample as a family of its own.
    return {n for n in names if not (n.endswith("_created") and n[: -len("_created")] in names)}


def exported_metric_names() -> set[str]:
    """Every name a query may use: each family with its sample suffixes."""
    return {f + suffix for f in exported_families() for suffix in SUFFIXES}


def queried_metrics(text: str) -> set[str]:
    return set(PROMQL_WORDS.findall(text))


# -- Prometheus ---------------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules_and_the_scrape_config() -> None:
    """promtool checks alerts.yml and prometheus.yml (which loads alerts.yml) as valid."""
    promtool = tool("promtool")
    out = run(promtool, "check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    assert re.search(r"SUCCESS: (\d+) rules found", out)
    run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """promtool's rule unit tests fire agents gone, loop down, settlement halted, L4
    divergence, accuracy drop and node unreachable, and keep quiet before their time."""
    out = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out


def test_alerts_cover_the_issue_and_query_only_exported_metrics() -> None:
    """Each required alert exists, and every metric an alert queries is one the coordinator
    (with settlement on) exports, so no alert silently watches a name that never appears."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    required = {
        "IoswarmAgentsGone",
        "IoswarmShadowAccuracyDrop",
        "IoswarmSettlementStuck",
        "IoswarmSettlementHalted",
        "IoswarmNodeUnreachable",
        "IoswarmLoopDown",
        "IoswarmCoordinatorDown",
        "IoswarmL4StateDivergence",
    }
    assert required <= alerts.keys()
    known = exported_metric_names()
    for name, expr in alerts.items():
        unknown = queried_metrics(expr) - known
        assert not unknown, f"{name} queries metrics no coordinator exports: {unknown}"


def test_promtool_accepts_what_the_registry_exports() -> None:
    """promtool check metrics finds no lint problem in the registry's full exposition."""
    registry = CollectorRegistry()
    CoordinatorMetrics(registry).watch_loops(lambda: {"blocks": {"state": "running"}})
    SettlerMetrics(registry)
    text = generate_latest(registry).decode()
    assert "process_resident_memory_bytes" in text and "ioswarm_build_info{" in text
    assert run(tool("promtool"), "check", "metrics", stdin=text).strip() == ""


# -- Grafana ------------------------------------------------------------------------------------


def test_dashboard_is_what_its_generator_writes() -> None:
    """The committed dashboard JSON equals scripts/gen_dashboard.py's output."""
    gen = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_dashboard.py"), "--check"], check=False
    )
    assert gen.returncode == 0, "run: python scripts/gen_dashboard.py"


def test_dashboard_panels_query_exported_metrics_on_a_valid_grid() -> None:
    """Every panel has a unique id, a grid position inside 24 columns and at least one query,
    and every metric queried is exported by a coordinator."""
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "ioswarm.json").read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    known = exported_metric_names()
    queried: set[str] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried |= queried_metrics(target["expr"])
    assert not queried - known, f"panels query unknown metrics: {queried - known}"
    # The dashboard shows every family of the coordinator's own metrics.
    families = {f for f in exported_families() if f.startswith("ioswarm_")} - {
        "ioswarm_build",
        "ioswarm_build_info",
    }
    unshown = {f for f in families if not any(f + sfx in queried for sfx in SUFFIXES)}
    assert not unshown, f"metrics no panel shows: {unshown}"


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    """The provisioned data source is the compose Prometheus and the dashboard folder is the
    one compose mounts the dashboard JSON into."""
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dash = yaml.safe_load((prov / "dashboards" / "ioswarm.yaml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{dash['providers'][0]['options']['path']}:ro" in mounts


# -- Kubernetes and compose ---------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_kubernetes_manifest_validates_strictly() -> None:
    """Every resource in deploy/k8s validates (strict: no unknown fields) against the
    Kubernetes schema shipped in kubernetes-validate, and the fleet has what the issue asks."""
    docs = k8s_documents()
    for name, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "ioswarm") == "ioswarm", name
    kinds = {(d["kind"], d["metadata"]["name"]): d for _, d in docs}
    coord = kinds[("Deployment", "ioswarm-coordinator")]["spec"]["template"]["spec"]
    probes = {k: v for k, v in coord["containers"][0].items() if k.endswith("Probe")}
    # Never /healthz: it is 503 while no agent is live, as on a fresh coordinator.
    paths = {k: p["httpGet"]["path"] for k, p in probes.items()}
    assert paths == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/livez",
    }
    l4 = kinds[("StatefulSet", "ioswarm-agent-l4")]["spec"]
    assert l4["volumeClaimTemplates"][0]["metadata"]["name"] == "datadir"
    assert "--datadir" in l4["template"]["spec"]["containers"][0]["command"][-1]
    assert ("Secret", "ioswarm-agent-keys") in kinds and ("Secret", "ioswarm-coordinator") in kinds


def test_the_kubernetes_validator_rejects_a_broken_manifest() -> None:
    """A misspelled field fails strict validation, so the check above can fail."""
    _, doc = next((n, d) for n, d in k8s_documents() if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(doc))
    broken["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_configs_shipped_for_compose_and_kubernetes_load(tmp_path: Path) -> None:
    """deploy/coordinator.yaml and the k8s ConfigMap's config.yaml pass the coordinator's own
    loader (TLS proxy opt-in included), with the secret files they name supplied."""
    secret = tmp_path / "master_secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    env = {"IOSWARM_MASTER_SECRET_FILE": str(secret), "IOSWARM_REWARD_SIGNER_KEY_FILE": ""}
    compose_cfg = load_config(DEPLOY / "coordinator.yaml", env)
    assert compose_cfg.grpc_host == "0.0.0.0" and compose_cfg.grpc_tls_terminated_by_proxy
    cm = next(
        d for _, d in k8s_documents() if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    )
    data = yaml.safe_load(cm["data"]["config.yaml"])
    signer = tmp_path / "signer"
    signer.write_text("")
    data["rewardSignerKeyFile"] = str(signer)
    k8s_cfg = parse_config(data, env)
    assert k8s_cfg.grpc_tls_terminated_by_proxy and k8s_cfg.diff_store_enabled


def compose_check(path: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_compose_file_validates_against_the_compose_spec(tmp_path: Path) -> None:
    """deploy/compose.yaml validates against the compose-spec schema that check-jsonschema
    ships (offline), and a file with an unknown service key does not."""
    done = compose_check(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["coordinator"]["restart_policy"] = "always"
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(broken))
    assert compose_check(bad).returncode != 0


def test_compose_runs_the_stack_the_issue_asks_for() -> None:
    """Node, coordinator, three agents, Prometheus, Grafana and nginx; only nginx's 443 leaves
    the host, every mounted file exists, and each agent's secret is its own key."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"node", "coordinator", "nginx", "prometheus", "grafana"} <= services.keys()
    agents = [s for name, s in services.items() if name.startswith("agent-")]
    assert len(agents) == 3
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:") or (name, port) == ("nginx", "443:443")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not source.startswith("./secrets"):
                assert (DEPLOY / source).exists(), source
    for agent in agents:
        agent_id = agent["environment"]["IOSWARM_AGENT_ID"]
        key_secret = next(s for s in agent["secrets"] if s.endswith("_key"))
        assert compose["secrets"][key_secret]["file"] == f"./secrets/{agent_id}.key"
    nginx_conf = DEPLOY / "nginx" / "ioswarm.conf"
    assert "server coordinator:14689;" in nginx_conf.read_text()


def test_make_secrets_writes_every_compose_secret_with_real_keys(tmp_path: Path) -> None:
    """deploy/make-secrets.sh creates every file compose.yaml names, agent keys equal
    `ioswarm keygen`'s, the server certificate verifies for nginx, and a rerun keeps them."""
    out = tmp_path / "secrets"
    run("sh", str(DEPLOY / "make-secrets.sh"), str(out))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for secret in compose["secrets"].values():
        assert (out / secret["file"].removeprefix("./secrets/")).is_file()
    master = (out / "master_secret").read_text().strip()
    assert (out / "agent-l2.key").read_text().strip() == agent_token(master, "agent-l2")
    verified = run(
        "openssl", "verify", "-CAfile", str(out / "tls/ca.pem"), "-verify_hostname", "nginx",
        str(out / "tls/server.pem"),
    )  # fmt: skip
    assert ": OK" in verified
    run("sh", str(DEPLOY / "make-secrets.sh"), str(out))
    assert (out / "master_secret").read_text().strip() == master


# -- Dockerfile and systemd ---------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages


def test_dockerfile_builds_the_extension_owns_data_and_checks_health() -> None:
    """A builder stage copies setup.py and compiles ioswarm/_speedups.c (failing without it);
    the runtime stage creates and chowns /data before USER, and its HEALTHCHECK asks /readyz;
    every COPY source exists."""
    builder, runtime = dockerfile_stages()
    assert builder[0][1].endswith("AS builder")
    copied = " ".join(a for i, a in builder if i == "COPY")
    assert "setup.py" in copied and "ioswarm" in copied
    build = " ".join(a for i, a in builder if i == "RUN")
    assert "gcc" in build and "assert NATIVE" in build
    assert ("COPY", "--from=builder /wheels /wheels") in runtime
    names = [i for i, _ in runtime]
    user_at = names.index("USER")
    setup = " ".join(a for i, a in runtime[:user_at] if i == "RUN")
    assert "mkdir -p /data" in setup and re.search(r"chown \S+ /data", setup)
    assert "assert NATIVE" in setup
    health = next(a for i, a in runtime if i == "HEALTHCHECK")
    assert "/readyz" in health and "IOSWARM_SWARM_API_PORT" in health
    for stage in (builder, runtime):
        for instruction, args in stage:
            if instruction == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert (ROOT / source).exists(), source


def test_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    """systemd-analyze verify reports nothing for the coordinator unit and an agent instance
    (paths pointed at this venv), while it does report a misspelled key."""
    analyze = tool("systemd-analyze")
    ioswarm_bin = str(Path(sys.executable).with_name("ioswarm"))
    units = []
    for name, as_name in (
        ("ioswarm-coordinator.service", "ioswarm-coordinator.service"),
        ("ioswarm-agent@.service", "ioswarm-agent@agent-1.service"),
    ):
        text = (DEPLOY / "systemd" / name).read_text()
        path = tmp_path / as_name
        path.write_text(text.replace("/opt/ioswarm/bin/ioswarm", ioswarm_bin))
        units.append(str(path))
    out = run(analyze, "verify", *units)
    assert out.strip() == "", out
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStat=/bin/true\nExecStart=/bin/true\n")
    assert "Unknown key" in run(analyze, "verify", str(bad))
