"""The Helm chart (deploy/helm/gridloop): lints strictly, renders valid Kubernetes objects, runs the
right commands with the right settings, and refuses to render without its secrets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gridloop.cli import build_parser
from gridloop.settings import SERVICES as ALL_SERVICES
from gridloop.settings import Settings, unsafe_settings
from schemas.reference import load_jurisdiction
from services.closer.config import CloserConfig
from services.reporter.config import RateLimits, ReporterConfig
from services.router.config import RouterConfig
from tests.support.helm import CHART, FULLNAME, RELEASE, by_kind, containers, env_of, render_chart, run_helm

pytestmark = pytest.mark.helm

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules"
SERVICES = tuple(sorted(ALL_SERVICES))  # every service is deployed: a values entry each
PORTS = {"reporter": 8001, "router": 8002, "closer": 8003, "notifier": 8004}
# the oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest with schemas
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())

# the secrets of ci/default-values.yaml, and the SASL ones the tests add
JWT = "ci-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
PG_PASSWORD = "ci-postgres-password-5f1d"
SASL_USER = "gridloop-ci-user"
SASL_PASSWORD = "ci-sasl-password-8c2e7a"


def render(helm: Path, *args: str, kube_version: str = KUBE_VERSIONS[-1]) -> list[dict[str, Any]]:
    """`helm template` of the chart as objects, for the newest Kubernetes unless told."""
    return render_chart(helm, *args, kube_version=kube_version)


def render_error(helm: Path, *args: str) -> str:
    """The error line of a `helm template` that must fail (not helm's log lines nor its --debug hint)."""
    proc = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0, proc.stdout
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    return error


def secret_args() -> list[str]:
    """--set arguments for a SASL_SSL Kafka login given as values (into the chart's Secret)."""
    return [
        "--set",
        f"kafka.securityProtocol=SASL_SSL,kafka.sasl.mechanism=SCRAM-SHA-512,kafka.sasl.username={SASL_USER}",
        "--set",
        f"kafka.sasl.password={SASL_PASSWORD}",
    ]


# --- lint and schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", [DEFAULT_VALUES, PRODUCTION_VALUES], ids=["default", "production"])
def test_lint_strict(helm: Path, values: Path) -> None:
    """`helm lint --strict` passes with each example values file."""
    proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [DEFAULT_VALUES, PRODUCTION_VALUES], ids=["default", "production"])
def test_rendered_objects_match_the_kubernetes_schemas(helm: Path, values: Path, kube_version: str) -> None:
    """Every rendered object validates against that Kubernetes version's strict JSON schema (no unknown
    field); the Prometheus operator's objects, which have none there, are checked by shape."""
    objects = render(helm, "-f", str(values), kube_version=kube_version)
    custom = []
    for o in objects:
        if o["apiVersion"] == "monitoring.coreos.com/v1":
            custom.append(o)
            continue
        kubernetes_validate.validate(o, kube_version, strict=True)
    kinds = sorted(o["kind"] for o in objects)
    if values == DEFAULT_VALUES:
        assert kinds == sorted(
            ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"] * len(SERVICES)
            + ["Job", "Secret", "Secret", "ServiceAccount"]
        )
        assert custom == []
    else:
        assert kinds == sorted(
            ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"] * len(SERVICES)
            + ["Job", "Ingress", "ServiceAccount", "ServiceMonitor", "PrometheusRule"]
        )
        monitor = by_kind(custom, "ServiceMonitor")[FULLNAME]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"] == [
            {
                "port": "http",
                "path": "/metrics",
                "interval": "15s",
                "honorLabels": True,
                "relabelings": [
                    {
                        "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_component"],
                        "targetLabel": "service",
                    }
                ],
            }
        ]
        rule = by_kind(custom, "PrometheusRule")[FULLNAME]
        assert [g["name"] for g in rule["spec"]["groups"]] == ["gridloop-alerts", "gridloop-recording"]


# --- the services ---------------------------------------------------------------------------------


def test_every_service_knows_the_notifiers_address(helm: Path) -> None:
    """GRIDLOOP_NOTIFIER_URL names the notifier's Service and port (the console's 通知 page calls it)."""
    objects = render(helm, "-f", str(DEFAULT_VALUES))
    for name, deployment in by_kind(objects, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert env_of(container)["GRIDLOOP_NOTIFIER_URL"] == f"http://{FULLNAME}-notifier:8004", name


def test_each_service_has_a_deployment_service_hpa_and_pdb(helm: Path) -> None:
    """Reporter, router and closer each run `gridloop <service>` on their port, probed on /readyz and
    /healthz, with resources, a Service, an HPA on the Deployment and a PodDisruptionBudget."""
    objects = render(helm, "-f", str(DEFAULT_VALUES))
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    names = {f"{FULLNAME}-{s}" for s in SERVICES}
    assert set(deployments) == set(services) == set(hpas) == set(pdbs) == names
    for service in SERVICES:
        name, port = f"{FULLNAME}-{service}", PORTS[service]
        deployment = deployments[name]
        assert "replicas" not in deployment["spec"]  # the HPA owns the count
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector == {
            "app.kubernetes.io/name": "gridloop",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": service,
        }
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        args = build_parser().parse_args(container["args"])
        assert (args.command, args.host, args.port, args.workers) == (service, "0.0.0.0", port, 1)
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
        assert container["resources"]["requests"]["cpu"] == ("500m" if service == "reporter" else "250m")
        assert container["resources"]["limits"] == {"memory": "768Mi"}
        assert services[name]["spec"]["selector"] == selector
        assert services[name]["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ]
        assert services[name]["metadata"]["labels"]["gridloop/job"] == f"gridloop-{service}"
        hpa = hpas[name]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
        assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
        assert pdbs[name]["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_services_get_settings_they_read_and_start_safe(
    helm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every environment variable the chart sets is one GridLoop reads, and a service's environment
    (its secrets resolved) gives production settings with no unsafe one and its own database."""
    objects = render(helm, "-f", str(DEFAULT_VALUES))
    known = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "PGPASSWORD"}
    for model in (Settings, CloserConfig, ReporterConfig, RouterConfig, RateLimits):
        prefix = model.model_config.get("env_prefix", "")
        known |= {f"{prefix}{field}".upper() for field in model.model_fields}
    [secret] = [
        o
        for o in objects
        if o["kind"] == "Secret" and "helm.sh/hook" not in o["metadata"].get("annotations", {})
    ]
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data == {"jwt-secret": JWT, "postgres-password": PG_PASSWORD}
    for _pod, container in containers(objects):
        env = env_of(container)
        assert set(env) <= known, set(env) - known
        if container["name"] not in SERVICES:
            continue
        service = container["name"]
        for name in [*env, "GRIDLOOP_DEV", "GRIDLOOP_DEV_MODE"]:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            if isinstance(value, tuple):
                assert value[1] == FULLNAME
                value = data[value[2]]
            monkeypatch.setenv(name, value)
        settings = Settings()
        assert unsafe_settings(settings) == []
        assert settings.dev_mode is False
        assert (settings.log_format, settings.access_log) == ("json", False)
        assert settings.kafka_security_protocol == "PLAINTEXT"
        assert settings.jwt_secret == JWT
        assert (
            settings.db_url(service)
            == f"postgresql://gridloop@postgres.db.svc:5432/{service}?sslmode=require"
        )
        assert settings.kafka_bootstrap_servers == "kafka-0.kafka:9092,kafka-1.kafka:9092,kafka-2.kafka:9092"
        assert (settings.topic_partitions, settings.topic_replication) == (12, 3)
        assert settings.public_base_url == "https://report.gridloop.example"
        assert settings.closer_public_url == "https://console.gridloop.example"
        # the image's reference data, and the calendar beside it
        assert str(settings.jurisdiction_dir) == "/app/data/jurisdictions"
        assert env["GRIDLOOP_CALENDAR_DIR"] == "/app/data/calendar"
        assert str(settings.var_dir) == "/app/var"
        assert env["PGPASSWORD"] == ("secret", FULLNAME, "postgres-password")


def test_pods_run_locked_down(helm: Path) -> None:
    """Every pod runs as uid 1000, non-root, read-only root filesystem, no capability, no API token;
    var/ and /tmp are scratch volumes."""
    for values in (DEFAULT_VALUES, PRODUCTION_VALUES):
        objects = render(helm, "-f", str(values))
        pods = list(containers(objects))
        assert len(pods) == 2 * len(SERVICES) + 1  # each service and its migration, the topics
        for pod, container in pods:
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsUser"] == 1000
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            }
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes[mounts["/app/var"]] == {"name": "var", "emptyDir": {}}
            assert volumes[mounts["/tmp"]] == {"name": "tmp", "emptyDir": {}}


def test_a_new_service_is_one_values_entry(helm: Path) -> None:
    """`services.notifier` alone gives it a Deployment, Service, HPA and PDB (database: false: no
    migration Job); a disabled service has none of them."""
    objects = render(
        helm,
        "-f",
        str(DEFAULT_VALUES),
        "--set",
        "services.notifier.port=8004,services.notifier.database=false,services.router.enabled=false",
    )
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert set(by_kind(objects, kind)) == {f"{FULLNAME}-{s}" for s in ("closer", "notifier", "reporter")}
    [container] = by_kind(objects, "Deployment")[f"{FULLNAME}-notifier"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"] == ["notifier", "--host", "0.0.0.0", "--port", "8004"]
    assert "DATABASE_URL" not in env_of(container)
    assert set(by_kind(objects, "Job")) == {
        f"{FULLNAME}-migrate-closer",
        f"{FULLNAME}-migrate-reporter",
        f"{FULLNAME}-topics",
    }


# --- hook Jobs ------------------------------------------------------------------------------------


def test_hook_jobs_migrate_each_database_and_create_the_topics(helm: Path) -> None:
    """Before install and every upgrade: `gridloop db upgrade --service S` per service (its own
    database only) and `gridloop topics`, reading the hook copy of the Secret, which Helm creates
    first (weight -10) and deletes once the hooks succeeded."""
    objects = render(helm, "-f", str(DEFAULT_VALUES), *secret_args())
    hook = {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    jobs = by_kind(objects, "Job")
    assert set(jobs) == {f"{FULLNAME}-migrate-{s}" for s in SERVICES} | {f"{FULLNAME}-topics"}
    hook_secret = by_kind(objects, "Secret")[f"{FULLNAME}-hooks"]
    assert hook_secret["metadata"]["annotations"] == {**hook, "helm.sh/hook-weight": "-10"}
    assert hook_secret["data"] == by_kind(objects, "Secret")[FULLNAME]["data"]
    for name, job in jobs.items():
        assert job["metadata"]["annotations"] == hook
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert "serviceAccountName" not in pod  # the chart's own does not exist before install
        [container] = pod["containers"]
        args = build_parser().parse_args(container["args"])
        env = env_of(container)
        refs = {value[1] for value in env.values() if isinstance(value, tuple)}
        assert refs == {f"{FULLNAME}-hooks"}
        if name.endswith("-topics"):
            assert args.command == "topics"
            assert (args.partitions, args.replication) == (None, None)  # the settings' (values)
            assert env["GRIDLOOP_TOPIC_PARTITIONS"] == "12"
            assert env["GRIDLOOP_KAFKA_SASL_PASSWORD"] == (
                "secret",
                f"{FULLNAME}-hooks",
                "kafka-sasl-password",
            )
            assert "DATABASE_URL" not in env
        else:
            service = name.removeprefix(f"{FULLNAME}-migrate-")
            assert (args.command, args.db_command, args.service) == ("db", "upgrade", service)
            assert (
                env["DATABASE_URL"] == f"postgresql://gridloop@postgres.db.svc:5432/{service}?sslmode=require"
            )
            assert "KAFKA_BOOTSTRAP_SERVERS" not in env
            # only the reporter's migrations key anything (rider numbers into pseudonyms, 0010)
            if service == "reporter":
                assert env["GRIDLOOP_JWT_SECRET"] == ("secret", f"{FULLNAME}-hooks", "jwt-secret")
            else:
                assert "GRIDLOOP_JWT_SECRET" not in env


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        (
            "services.reporter.replica=3",
            "- at '/services/reporter': additional properties 'replica' not allowed",
        ),
        (
            "postgresql.sslmode=requre",
            "- at '/postgresql/sslmode': value must be one of '', 'disable', 'allow', 'prefer', 'require', "
            "'verify-ca', 'verify-full'",
        ),
    ],
    ids=["misspelt-key", "unknown-sslmode"],
)
def test_values_schema_refuses_a_misspelt_or_wrong_value(helm: Path, setting: str, problem: str) -> None:
    """values.schema.json stops a misspelt key or an unknown setting before anything renders."""
    proc = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(DEFAULT_VALUES), "--set", setting)
    assert proc.returncode != 0
    lines = [line.strip() for line in proc.stderr.splitlines()]
    assert "Error: values don't meet the specifications of the schema(s) in the following chart(s):" in lines
    assert problem in lines


# --- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (
            "secrets.jwtSecret=",
            "secrets.jwtSecret is required (32+ random bytes: openssl rand -base64 48), or name a Secret "
            "in secrets.existingSecret",
        ),
        (
            "postgresql.password=",
            "postgresql.password is required with postgresql.host, or name a Secret in "
            "secrets.existingSecret",
        ),
        (
            "postgresql.host=",
            "postgresql.urls.closer is required (or postgresql.host and postgresql.password, or "
            "secrets.existingSecret)",
        ),
        (
            "kafka.sasl.mechanism=SCRAM-SHA-512",
            "kafka.sasl.username is required with kafka.sasl.mechanism, or name a Secret in "
            "secrets.existingSecret",
        ),
        (
            "kafka.bootstrapServers=",
            "kafka.bootstrapServers is required (host:port of your brokers, comma separated)",
        ),
        (
            "publicUrls.reporter=",
            "publicUrls.reporter is required (the https address riders' QR codes point at), or enable the "
            "Ingress with services.reporter.ingress.host",
        ),
        (
            "publicUrls.closer=http://console.gridloop.example",
            "publicUrls.closer must be an https:// address (the services refuse plain http for a public "
            "address), not http://console.gridloop.example",
        ),
    ],
    ids=["jwt", "pg-password", "pg-url", "sasl", "kafka", "public-url", "http"],
)
def test_rendering_fails_without_a_secret_or_setting(helm: Path, drop: str, message: str) -> None:
    """No secret has a default: a missing one stops the rendering with a message naming the value."""
    error = render_error(helm, "-f", str(DEFAULT_VALUES), "--set", drop)
    assert error.startswith("Error: execution error at (gridloop/templates/")
    assert error.endswith(f"): {message}")


def test_no_values_at_all_fail_on_the_jwt_secret(helm: Path) -> None:
    """The chart's bare defaults do not render: the JWT secret is asked for first."""
    error = render_error(helm)
    assert error == (
        "Error: execution error at (gridloop/templates/secret.yaml:2:13): secrets.jwtSecret is required "
        "(32+ random bytes: openssl rand -base64 48), or name a Secret in secrets.existingSecret"
    )


def test_no_secret_value_outside_secrets(helm: Path) -> None:
    """The secrets given as values appear only in Secrets (base64): never in a ConfigMap, an env value,
    an annotation, or anywhere else in plain text or base64."""
    objects = render(
        helm,
        "-f",
        str(DEFAULT_VALUES),
        *secret_args(),
        "--set-file",
        f"jurisdictions.files.categories\\.json={ROOT / 'data' / 'jurisdictions' / 'categories.json'}",
    )
    assert len(by_kind(objects, "ConfigMap")) == 1
    for secret_value in (JWT, PG_PASSWORD, SASL_USER, SASL_PASSWORD):
        encoded = base64.b64encode(secret_value.encode()).decode()
        for o in objects:
            text = json.dumps(o)
            if o["kind"] == "Secret":
                assert secret_value not in text
                continue
            assert secret_value not in text and encoded not in text, f"{o['kind']} {o['metadata']['name']}"


def test_existing_secret(helm: Path) -> None:
    """With secrets.existingSecret the chart makes no Secret and every credential is a reference to
    that Secret's keys: the JWT secret, each service's database URL, the SASL login."""
    objects = render(helm, "-f", str(PRODUCTION_VALUES))
    assert by_kind(objects, "Secret") == {}
    for pod, container in containers(objects):
        env = env_of(container)
        secrets = {name: value for name, value in env.items() if isinstance(value, tuple)}
        expected = {}
        if container["name"] in SERVICES:
            expected["GRIDLOOP_JWT_SECRET"] = ("secret", "gridloop-credentials", "jwt-secret")
            expected["DATABASE_URL"] = ("secret", "gridloop-credentials", f"{container['name']}-database-url")
        if container["name"] == "migrate":
            service = container["args"][-1]
            expected["DATABASE_URL"] = ("secret", "gridloop-credentials", f"{service}-database-url")
            if service == "reporter":
                expected["GRIDLOOP_JWT_SECRET"] = ("secret", "gridloop-credentials", "jwt-secret")
        if container["name"] in (*SERVICES, "topics"):
            expected["GRIDLOOP_KAFKA_SASL_USERNAME"] = (
                "secret",
                "gridloop-credentials",
                "kafka-sasl-username",
            )
            expected["GRIDLOOP_KAFKA_SASL_PASSWORD"] = (
                "secret",
                "gridloop-credentials",
                "kafka-sasl-password",
            )
            assert env["GRIDLOOP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            assert env["GRIDLOOP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
            assert env["GRIDLOOP_KAFKA_SSL_CAFILE"] == "/etc/gridloop/kafka-tls/ca.crt"
            assert env["GRIDLOOP_TOPIC_PREFIX"] == "city."
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["kafka-tls"]["secret"] == {"secretName": "kafka-ca"}
            assert {
                "name": "kafka-tls",
                "mountPath": "/etc/gridloop/kafka-tls",
                "readOnly": True,
            } in container["volumeMounts"]
        assert secrets == expected, container["name"]


# --- reference data -------------------------------------------------------------------------------


def test_jurisdiction_files_from_set_file_load_as_the_shipped_folder(helm: Path, tmp_path: Path) -> None:
    """The shipped data/jurisdictions given file by file with --set-file becomes one ConfigMap whose
    volume lays the files out as the folder was (sub-folders too): laid out as the kubelet would, it
    loads to the same jurisdiction. The services (only they) mount it and point at it."""
    source = ROOT / "data" / "jurisdictions"
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    assert len(files) == 9
    args: list[str] = []
    for relative in files:
        args += [
            "--set-file",
            f"jurisdictions.files.{relative.replace('.', chr(92) + '.')}={source / relative}",
        ]
    objects = render(helm, "-f", str(DEFAULT_VALUES), *args)
    configmap = by_kind(objects, "ConfigMap")[f"{FULLNAME}-jurisdictions"]
    assert sorted(configmap["data"]) == sorted(f.replace("/", "__") for f in files)
    for pod, container in containers(objects):
        env = env_of(container)
        volumes = {v["name"]: v for v in pod["volumes"]}
        if container["name"] not in SERVICES:
            assert "jurisdictions" not in volumes and "GRIDLOOP_JURISDICTION_DIR" not in env
            continue
        assert env["GRIDLOOP_JURISDICTION_DIR"] == "/etc/gridloop/jurisdictions"
        assert env["GRIDLOOP_CALENDAR_DIR"] == "/app/data/calendar"  # not beside the ConfigMap's folder
        assert {
            "name": "jurisdictions",
            "mountPath": "/etc/gridloop/jurisdictions",
            "readOnly": True,
        } in container["volumeMounts"]
        projected = volumes["jurisdictions"]["configMap"]
        assert projected["name"] == f"{FULLNAME}-jurisdictions"
    laid_out = tmp_path / "jurisdictions"
    for item in projected["items"]:
        target = laid_out / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(configmap["data"][item["key"]])
    assert sorted(item["path"] for item in projected["items"]) == files
    assert load_jurisdiction(laid_out) == load_jurisdiction(source)


def test_calendar_files_replace_the_shipped_folder(helm: Path) -> None:
    """calendar.files (<year>.json) become the closer's GRIDLOOP_CALENDAR_DIR; another name is refused."""
    year = ROOT / "data" / "calendar" / "2026.json"
    objects = render(helm, "-f", str(DEFAULT_VALUES), "--set-file", f"calendar.files.2026\\.json={year}")
    assert by_kind(objects, "ConfigMap")[f"{FULLNAME}-calendar"]["data"] == {"2026.json": year.read_text()}
    [container] = by_kind(objects, "Deployment")[f"{FULLNAME}-closer"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(container)["GRIDLOOP_CALENDAR_DIR"] == "/etc/gridloop/calendar"
    assert env_of(container)["GRIDLOOP_JURISDICTION_DIR"] == "/app/data/jurisdictions"
    error = render_error(
        helm, "-f", str(DEFAULT_VALUES), "--set-file", f"calendar.files.holidays\\.json={year}"
    )
    assert error.endswith('): calendar.files: "holidays.json" is not a <year>.json file name')


# --- the edge and monitoring ----------------------------------------------------------------------


def test_ingress_tls_per_public_service_and_trusted_proxies(helm: Path) -> None:
    """The Ingress serves the reporter and the closer on their own hosts over TLS (the router stays
    inside), the public URLs follow the hosts, and the controller's CIDR is the trusted proxy."""
    objects = render(helm, "-f", str(PRODUCTION_VALUES))
    ingress = by_kind(objects, "Ingress")[FULLNAME]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [
        {"hosts": ["console.gridloop.example"], "secretName": f"{FULLNAME}-closer-tls"},
        {"hosts": ["report.gridloop.example"], "secretName": f"{FULLNAME}-reporter-tls"},
    ]
    backends = {
        rule["host"]: rule["http"]["paths"][0]["backend"]["service"]["name"] for rule in ingress["rules"]
    }
    assert backends == {
        "console.gridloop.example": f"{FULLNAME}-closer",
        "report.gridloop.example": f"{FULLNAME}-reporter",
    }
    for name in SERVICES:
        [container] = by_kind(objects, "Deployment")[f"{FULLNAME}-{name}"]["spec"]["template"]["spec"][
            "containers"
        ]
        env = env_of(container)
        assert env["GRIDLOOP_PUBLIC_BASE_URL"] == "https://report.gridloop.example"
        assert env["GRIDLOOP_CLOSER_PUBLIC_URL"] == "https://console.gridloop.example"
        assert env["GRIDLOOP_TRUSTED_PROXIES"] == "10.244.0.0/16"
    error = render_error(helm, "-f", str(PRODUCTION_VALUES), "--set", "trustedProxies=")
    assert error.endswith(
        "): trustedProxies is required with the Ingress: the ingress controller's pod CIDR "
        "(GRIDLOOP_TRUSTED_PROXIES), or every rider shares one address and one rate limit"
    )


def test_monitoring_scrapes_every_replica_under_the_rules_job_names(helm: Path, tmp_path: Path) -> None:
    """The ServiceMonitor selects the three Services and names their jobs gridloop-<service> (what
    GridLoopServiceDown matches); the PrometheusRule is deploy/prometheus/rules itself, not a copy,
    and `helm package` carries the linked rules into the archive."""
    objects = render(helm, "-f", str(PRODUCTION_VALUES))
    monitor = by_kind(objects, "ServiceMonitor")[FULLNAME]["spec"]
    assert monitor["jobLabel"] == "gridloop/job"
    selected = [
        s
        for s in by_kind(objects, "Service").values()
        if all(s["metadata"]["labels"].get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
        and "gridloop/job" in s["metadata"]["labels"]
    ]
    assert sorted(s["metadata"]["labels"]["gridloop/job"] for s in selected) == [
        "gridloop-closer",
        "gridloop-notifier",
        "gridloop-reporter",
        "gridloop-router",
    ]
    groups = [g for path in sorted(RULES.glob("*.yml")) for g in yaml.safe_load(path.read_text())["groups"]]
    rule = by_kind(objects, "PrometheusRule")[FULLNAME]
    assert rule["spec"]["groups"] == groups
    [down] = [r for g in groups for r in g["rules"] if r.get("alert") == "GridLoopServiceDown"]
    assert down["expr"] == 'up{job=~"gridloop-.*"} == 0'
    assert (CHART / "files" / "prometheus-rules").resolve() == RULES.resolve()
    proc = run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    packaged = render_chart(helm, "-f", str(PRODUCTION_VALUES), chart=tmp_path / "gridloop-0.1.0.tgz")
    assert by_kind(packaged, "PrometheusRule")[FULLNAME]["spec"]["groups"] == groups
