#!/usr/bin/env python3
"""Validates deploy/kubernetes/ offline; exits 1 naming every problem found.

1. Every manifest (every YAML document of every *.yaml file except kustomization.yaml)
   against the Kubernetes OpenAPI schemas bundled with kubernetes-validate, strict
   (a field the schema does not know is an error), for KUBERNETES_VERSION.
2. kustomization.yaml lists every manifest of its folder, and only files that exist.
3. The cluster file in the troupe-cluster ConfigMap goes through troupe's own validation:
   `troupe node --config FILE --name <a name no file has>`, with the head's --set
   overrides. The node command loads and validates the file (and the overrides) before
   anything else, then fails on the unknown name before it starts anything; so the
   expected answer is exactly that "unknown node" error (troupe has no config-only
   check command yet).
4. The manifests agree with the cluster file: the StatefulSet's pods are exactly the
   nodes (names, hosts, ports, one nvidia.com/gpu per cuda device), the Services' ports
   are head.port and server.port, the probes hit /health and /ready on server.port, the
   HPA scales the StatefulSet no further than the file's nodes on a metric the adapter
   serves, and the node's preStop drain fits drain_timeout and the grace period.
5. deploy/docker/Dockerfile's build stage installs the Debian packages of tools/setup.sh.

usage: tools/validate_k8s.py [--troupe PATH] [--dir deploy/kubernetes]
"""
import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover
    sys.exit("validate_k8s: kubernetes-validate is not installed (tools/venv.sh installs "
             "tools/requirements-test.txt)")

# The Kubernetes version the manifests must be valid for (schemas bundled with
# kubernetes-validate; no network).
KUBERNETES_VERSION = "1.30.0"
SENTINEL = "__validate_k8s_no_such_node__"

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def parse_duration_ms(text, where):
    """A cluster-file duration ("250ms", "1.5s", "2m", "1h" or integer ms) in ms."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*", str(text))
    if not m:
        problem(where, f"cannot read the duration {text!r}")
        return None
    scale = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]
    return int(float(m.group(1)) * scale)


def validate_schemas(root, files):
    resources = {}
    for path in files:
        rel = os.path.relpath(path, root)
        try:
            docs = load_documents(path)
        except yaml.YAMLError as e:
            problem(rel, f"YAML syntax error: {e}")
            continue
        for i, doc in enumerate(docs):
            where = f"{rel} (document {i + 1}, {doc.get('kind', '?')} {doc.get('metadata', {}).get('name', '?')})"
            try:
                kubernetes_validate.validate(copy.deepcopy(doc), KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                path_text = ".".join(str(p) for p in e.path) or "(top)"
                problem(where, f"Kubernetes {KUBERNETES_VERSION} schema: {path_text}: {e.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                problem(where, f"no Kubernetes {KUBERNETES_VERSION} schema: {e}")
            resources[(doc.get("kind"), doc.get("metadata", {}).get("name"))] = (rel, doc)
    return resources


def check_kustomization(root, files):
    path = os.path.join(root, "kustomization.yaml")
    if not os.path.exists(path):
        problem("kustomization.yaml", "missing")
        return
    listed = set(load_documents(path)[0].get("resources", []))
    for r in sorted(listed):
        if not os.path.exists(os.path.join(root, r)):
            problem("kustomization.yaml", f"lists {r}, which does not exist")
    for f in files:
        rel = os.path.relpath(f, root)
        if os.path.dirname(rel) == "" and rel not in listed:
            problem("kustomization.yaml", f"does not list {rel}")


def get(resources, kind, name):
    entry = resources.get((kind, name))
    if entry is None:
        problem("deploy/kubernetes", f"no {kind} named {name}")
        return None, {}
    return entry


def container(doc, name):
    for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if c.get("name") == name:
            return c
    return {}


def run_troupe_validation(troupe, cluster_text, overrides):
    """True when troupe accepts the cluster file with these --set overrides."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cluster.yaml")
        with open(path, "w") as f:
            f.write(cluster_text)
        cmd = [troupe, "node", "--config", path, "--name", SENTINEL]
        for o in overrides:
            cmd += ["--set", o]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            problem("troupe-cluster cluster.yaml", f"`{' '.join(cmd)}` did not exit within 30 s")
            return False
        err = (r.stderr + r.stdout).strip()
        if r.returncode == 1 and f"unknown node '{SENTINEL}'" in err:
            return True
        problem("troupe-cluster cluster.yaml",
                f"troupe's validation refused it (exit {r.returncode}, with --set {overrides}): {err}")
        return False


def substitute_env(arg):
    """Kubernetes expands $(VAR) in args; any non-empty stand-in will do for validation."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "validate-" + m.group(1).lower(), arg)


def check_consistency(resources, troupe):
    cm_file, cm = get(resources, "ConfigMap", "troupe-cluster")
    text = cm.get("data", {}).get("cluster.yaml")
    if text is None:
        problem(cm_file or "deploy/kubernetes", "ConfigMap troupe-cluster has no cluster.yaml")
        return
    try:
        cluster = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        problem(cm_file, f"cluster.yaml: YAML syntax error: {e}")
        return

    head_file, head = get(resources, "Deployment", "troupe-head")
    head_c = container(head, "head")
    args = [substitute_env(a) for a in head_c.get("args", [])]
    overrides = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"]
    if head_c and (args[:3] != ["serve", "--config", "/etc/troupe/cluster.yaml"]):
        problem(head_file, f"the head must run `serve --config /etc/troupe/cluster.yaml ...`, got {args[:3]}")
    # The file as the nodes read it, and as the head reads it (with its overrides).
    run_troupe_validation(troupe, text, [])
    if overrides:
        run_troupe_validation(troupe, text, overrides)

    ns = cm.get("metadata", {}).get("namespace", "troupe")
    for (kind, name), (rel, doc) in resources.items():
        if kind not in ("Namespace",) and rel.find(os.sep) < 0:
            got = doc.get("metadata", {}).get("namespace")
            if got != ns:
                problem(rel, f"{kind} {name} is in namespace {got!r}, the cluster file's in {ns!r}")

    head_cfg = cluster.get("head", {}) or {}
    server = cluster.get("server", {}) or {}
    head_port = head_cfg.get("port", 7100)
    server_port = server.get("port", 8000)
    if head_cfg.get("host") != f"troupe-head.{ns}.svc.cluster.local":
        problem(cm_file, f"head.host is {head_cfg.get('host')!r}: the nodes reach the head through the "
                         f"troupe-head Service, troupe-head.{ns}.svc.cluster.local")
    if server.get("host") not in ("0.0.0.0", "::"):
        problem(cm_file, f"server.host is {server.get('host', '127.0.0.1')!r}: the gateway Service "
                         "reaches the head on the pod's address, so it must listen on 0.0.0.0")
    if "head.host=0.0.0.0" not in overrides:
        problem(head_file, "the head needs --set head.host=0.0.0.0 (it cannot bind the Service's address)")
    ports = {p.get("name"): p.get("containerPort") for p in head_c.get("ports", [])}
    if ports.get("http") != server_port:
        problem(head_file, f"container port http is {ports.get('http')}, server.port is {server_port}")
    if ports.get("supervisor") != head_port:
        problem(head_file, f"container port supervisor is {ports.get('supervisor')}, head.port is {head_port}")
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")):
        got = head_c.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") not in ("http", server_port):
            problem(head_file, f"{probe} must be GET {path} on the http port, got {got}")
    annotations = head.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
    if annotations.get("prometheus.io/port") != str(server_port):
        problem(head_file, f"prometheus.io/port is {annotations.get('prometheus.io/port')}, server.port is {server_port}")

    svc_file, svc = get(resources, "Service", "troupe-head")
    svc_ports = svc.get("spec", {}).get("ports", [])
    if not any(p.get("port") == head_port for p in svc_ports):
        problem(svc_file, f"Service troupe-head does not expose head.port {head_port}")
    if not svc.get("spec", {}).get("publishNotReadyAddresses"):
        problem(svc_file, "troupe-head needs publishNotReadyAddresses: the nodes register before the head is ready")

    sts_file, sts = get(resources, "StatefulSet", "troupe-node")
    spec = sts.get("spec", {})
    service = spec.get("serviceName")
    node_svc_file, node_svc = get(resources, "Service", service)
    if node_svc and node_svc.get("spec", {}).get("clusterIP") != "None":
        problem(node_svc_file, f"Service {service} must be headless (clusterIP: None) for stable pod names")
    node_c = container(sts, "node")
    node_args = node_c.get("args", [])
    if node_args[:5] != ["node", "--config", "/etc/troupe/cluster.yaml", "--name", "$(POD_NAME)"]:
        problem(sts_file, f"the node must run `node --config /etc/troupe/cluster.yaml --name $(POD_NAME)`, got {node_args}")
    nodes = cluster.get("nodes", []) or []
    replicas = spec.get("replicas", 1)
    if replicas != len(nodes):
        problem(sts_file, f"replicas is {replicas} but the cluster file lists {len(nodes)} nodes")
    node_ports = {p.get("name"): p.get("containerPort") for p in node_c.get("ports", [])}
    gpus = int(node_c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    sts_name = sts.get("metadata", {}).get("name")
    for i, n in enumerate(nodes):
        want_name = f"{sts_name}-{i}"
        want_host = f"{want_name}.{service}.{ns}.svc.cluster.local"
        if n.get("name") != want_name:
            problem(cm_file, f"nodes[{i}].name is {n.get('name')!r}, the StatefulSet's pod {i} is {want_name!r}")
        if n.get("host") != want_host:
            problem(cm_file, f"nodes[{i}].host is {n.get('host')!r}, the pod's stable name is {want_host!r}")
        if n.get("port") != node_ports.get("agent"):
            problem(cm_file, f"nodes[{i}].port is {n.get('port')}, the node container's port agent is {node_ports.get('agent')}")
        cuda = sum(1 for d in n.get("devices", ["cpu"]) if str(d).startswith("cuda:"))
        if cuda != gpus:
            problem(cm_file, f"nodes[{i}] lists {cuda} cuda device(s), the node pod requests nvidia.com/gpu: {gpus}")
    env = {e.get("name"): e.get("value") for e in node_c.get("env", [])}
    if env.get("TROUPE_HEAD") != f"{head_cfg.get('host')}:{head_port}":
        problem(sts_file, f"TROUPE_HEAD is {env.get('TROUPE_HEAD')!r}, head.host:head.port is "
                          f"{head_cfg.get('host')}:{head_port}")

    # Graceful termination: preStop drain --timeout >= drain_timeout + 5 s, grace >= timeout + 10 s.
    drain_ms = parse_duration_ms((cluster.get("fault_tolerance", {}) or {}).get("drain_timeout", "30s"),
                                 "fault_tolerance.drain_timeout")
    hook = " ".join(node_c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
    m = re.search(r"troupe drain .*--wait.*--timeout (\d+)", hook)
    grace = sts.get("spec", {}).get("template", {}).get("spec", {}).get("terminationGracePeriodSeconds", 30)
    if not m:
        problem(sts_file, f"the node's preStop hook must drain it (troupe drain ... --wait --timeout N), got {hook!r}")
    elif drain_ms is not None:
        timeout_s = int(m.group(1))
        if timeout_s * 1000 < drain_ms + 5000:
            problem(sts_file, f"preStop drain --timeout {timeout_s} s is shorter than drain_timeout "
                              f"({drain_ms} ms) + 5 s")
        if grace < timeout_s + 10:
            problem(sts_file, f"terminationGracePeriodSeconds {grace} is shorter than the drain's --timeout "
                              f"{timeout_s} s + 10 s")

    hpa_file, hpa = get(resources, "HorizontalPodAutoscaler", "troupe-node")
    hspec = hpa.get("spec", {})
    ref = hspec.get("scaleTargetRef", {})
    if hpa and (ref.get("kind"), ref.get("name")) != ("StatefulSet", sts_name):
        problem(hpa_file, f"scales {ref.get('kind')} {ref.get('name')}, not StatefulSet {sts_name}")
    if hspec.get("maxReplicas", 0) > len(nodes):
        problem(hpa_file, f"maxReplicas {hspec.get('maxReplicas')} exceeds the {len(nodes)} nodes of the "
                          "cluster file (a pod the file does not name cannot register)")
    if (cluster.get("autoscale", {}) or {}).get("enabled"):
        problem(cm_file, "autoscale.enabled is true: the in-process autoscaler and the HPA would fight")
    adapter_file, adapter = get(resources, "ConfigMap", "adapter-config")
    served = set()
    if adapter:
        rules = yaml.safe_load(adapter.get("data", {}).get("config.yaml", "")) or {}
        served = {r.get("name", {}).get("as") for r in rules.get("externalRules", [])}
    for metric in hspec.get("metrics", []):
        name = metric.get("external", {}).get("metric", {}).get("name")
        if metric.get("type") == "External" and name not in served:
            problem(hpa_file, f"external metric {name} is not served by {adapter_file}'s externalRules ({sorted(served)})")


def check_dockerfile(repo):
    """The Dockerfile's first apt-get install lists exactly tools/setup.sh's packages=(...)."""
    docker = os.path.join(repo, "deploy", "docker", "Dockerfile")
    setup = os.path.join(repo, "tools", "setup.sh")
    if not os.path.exists(docker):
        problem("deploy/docker/Dockerfile", "missing")
        return
    m = re.search(r"^packages=\((.*?)\)", open(setup).read(), re.S | re.M)
    d = re.search(r"apt-get install -y -qq --no-install-recommends \\\n(.*?)\n && ", open(docker).read(), re.S)
    if not m or not d:
        problem("deploy/docker/Dockerfile", "cannot find the package lists (setup.sh's packages=, the build stage's apt-get install)")
        return
    want = set(m.group(1).split())
    got = set(d.group(1).replace("\\", " ").split())
    if want != got:
        problem("deploy/docker/Dockerfile", f"the build stage's packages differ from tools/setup.sh's: "
                                           f"missing {sorted(want - got)}, extra {sorted(got - want)}")


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--troupe", default=os.path.join(repo, "build", "bin", "troupe"), help="the troupe binary")
    ap.add_argument("--dir", default=os.path.join(repo, "deploy", "kubernetes"), help="the manifests")
    a = ap.parse_args()
    if not os.access(a.troupe, os.X_OK):
        sys.exit(f"validate_k8s: no troupe binary at {a.troupe} (build it, or pass --troupe)")
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.dir) for f in fs
                   if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
    if not files:
        sys.exit(f"validate_k8s: no manifests under {a.dir}")
    resources = validate_schemas(a.dir, files)
    check_kustomization(a.dir, files)
    check_consistency(resources, a.troupe)
    check_dockerfile(repo)
    if problems:
        print(f"validate_k8s: {len(problems)} problem(s) in {a.dir}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"validate_k8s: {len(files)} manifest file(s) valid for Kubernetes {KUBERNETES_VERSION} "
          f"(strict), the cluster file passes troupe's validation, manifests and cluster file agree, "
          f"the Dockerfile installs setup.sh's packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
