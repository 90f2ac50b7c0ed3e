#!/usr/bin/env python3
"""Seeded workload generator for the converge benchmarks (issue 7).

Writes, under OUT (same --seed and --n => the same bytes):

  claims-json/<name>.json     N claims as JSON
  claims-yaml/<name>.yaml     the same N claims as YAML
  tags.yaml                   the `tags:` block every constraint resolves against
  cedar/entities.json         pools, users and the N environments (Cedar JSON)
  cedar/tests.json            N authorization requests for `cedar run-tests`,
                              each with its entity slice (user, pools, environment)
  repo.git/                   (--git) a bare repository whose `main` holds the
                              YAML claims under environments/: one commit with
                              N - C claims, then C one-claim commits (default
                              C = 1,000), built with `git fast-import`

The claims pass the built-in schema and Cedar policies (policies/default.cedar
and policies/entities.json): john.doe is in team1, jane.roe in team2 and ai,
ops in platform, team1 and team2; prod and stage use deployment_method git; a
sue never uses the ai pool and expires in 2099. Service versions mix exact
tags, caret, range, x-pattern, `*` and the object form; every constraint has
matching tags in tags.yaml.

Only the Python standard library is used.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys

TYPES = [("dev", 40), ("stage", 15), ("staging", 5), ("prod", 15), ("sue", 25)]
# (user, pool) pairs the default policies permit.
MEMBERS = [
    ("john.doe@company.com", "team1"),
    ("jane.roe@company.com", "team2"),
    ("jane.roe@company.com", "ai"),
    ("ops@company.com", "platform"),
    ("ops@company.com", "team1"),
    ("ops@company.com", "team2"),
]
POOLS = ["team1", "team2", "platform", "ai"]
USERS = {
    "john.doe@company.com": ("John Doe", ["team1"]),
    "jane.roe@company.com": ("Jane Roe", ["team2", "ai"]),
    "ops@company.com": ("Platform operations", ["platform", "team1", "team2"]),
}
SERVICES = [
    "user-service", "auth-service", "billing", "search", "checkout", "ledger",
    "payments-api", "api-gateway", "notifications", "inventory", "orders",
    "shipping", "catalog", "reporting", "recommendations", "frontend",
]
# billing uses four-part versions, everything else three.
FOUR_PART = {"billing"}
EPOCH_2099 = 4102358400  # 2099-12-31T00:00:00Z


def tags_for(service):
    out = []
    for major in (1, 2, 3):
        for minor in (0, 1, 2, 5):
            for patch in (0, 4):
                if service in FOUR_PART:
                    out.append(f"{major}.{minor}.{patch}.0")
                else:
                    out.append(f"v{major}.{minor}.{patch}")
    out.append("v3.6.0-rc.1" if service not in FOUR_PART else "3.6.0.0-rc.1")
    return out


def version_spec(rng, service):
    """One version form; constraints always match a tag in tags_for(service)."""
    form = rng.random()
    four = service in FOUR_PART
    if form < 0.45:  # exact tag (its own tag, needs no list)
        core = f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}"
        return (core + f".{rng.randint(0, 9)}") if four else "v" + core
    if form < 0.60:
        return f"^{rng.randint(1, 3)}.0.0" + (".0" if four else "")
    if form < 0.72:
        major = rng.randint(1, 2)
        return f">={major}.1.0, <{major + 1}.0.0"
    if form < 0.82:
        return f"{rng.randint(1, 3)}.x.x" + (".x" if four else "")
    if form < 0.88:
        return "*"
    return None  # object form


def make_claim(rng, i):
    etype = rng.choices([t for t, _ in TYPES], weights=[w for _, w in TYPES])[0]
    kind = "stage" if etype == "staging" else etype
    members = [m for m in MEMBERS if not (kind == "sue" and m[1] == "ai")]
    user, pool = rng.choice(members)
    name = f"{kind}-{pool}-{i:05d}"
    method = "git" if kind in ("prod", "stage") or rng.random() < 0.1 else "dynamic"
    created = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    claim = {
        "user": user,
        "environment_pool": pool,
        "creation_date": created,
        "environment_name": name,
        "environment_type": etype,
    }
    if kind == "sue" or rng.random() < 0.2:
        claim["expiration_date"] = "2099-12-31T00:00:00Z"
    elif rng.random() < 0.5:
        claim["expiration_date"] = None
    claim["deployment_method"] = method
    services = {}
    for service in sorted(rng.sample(SERVICES, rng.randint(5, 12))):
        spec = version_spec(rng, service)
        if spec is None:
            tag = f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}"
            services[service] = {
                "version": tag,
                "docker_image": f"artifactory/docker-releases/{service}:{tag}",
                "ansible_artifact": f"artifactory/oci-releases/{service}-ansible:{tag}",
            }
        else:
            services[service] = spec
    claim["services"] = services
    return claim


PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9@._/-]*$")
RESERVED = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"}


def yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, str) and PLAIN.match(v) and v.lower() not in RESERVED:
        return v
    return json.dumps(v)  # a JSON string is a YAML double-quoted scalar


def to_yaml(claim, i):
    lines = [f"# benchmark claim {i}"]
    for key, value in claim.items():
        if key == "services":
            lines.append("services:")
            for service, spec in value.items():
                if isinstance(spec, dict):
                    lines.append(f"  {service}:")
                    for k, v in spec.items():
                        lines.append(f"    {k}: {yaml_scalar(v)}")
                else:
                    lines.append(f"  {service}: {yaml_scalar(spec)}")
        else:
            lines.append(f"{key}: {yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


def to_json(claim):
    return json.dumps(claim, indent=2) + "\n"


def tags_yaml():
    lines = ["tags:"]
    for service in SERVICES:
        lines.append(f"  {service}: [{', '.join(json.dumps(t) for t in tags_for(service))}]")
    return "\n".join(lines) + "\n"


def user_entity(user):
    name, pools = USERS[user]
    return {
        "uid": {"type": "Converge::User", "id": user},
        "attrs": {"name": name},
        "parents": [{"type": "Converge::Pool", "id": p} for p in pools],
    }


def pool_entity(pool):
    return {"uid": {"type": "Converge::Pool", "id": pool}, "attrs": {"description": pool}, "parents": []}


def env_entity(claim):
    kind = "stage" if claim["environment_type"] == "staging" else claim["environment_type"]
    attrs = {
        "type": kind,
        "pool": {"__entity": {"type": "Converge::Pool", "id": claim["environment_pool"]}},
        "owner": {"__entity": {"type": "Converge::User", "id": claim["user"]}},
        "deployment_method": claim["deployment_method"],
        "services": sorted(claim["services"]),
        "secrets": [],
    }
    if claim.get("expiration_date"):
        attrs["expires_at"] = EPOCH_2099
    return {"uid": {"type": "Converge::Environment", "id": claim["environment_name"]}, "attrs": attrs, "parents": []}


def cedar_test(claim, now):
    user = claim["user"]
    slice_ = [user_entity(user)] + [pool_entity(p) for p in USERS[user][1]] + [env_entity(claim)]
    return {
        "name": claim["environment_name"],
        "request": {
            "principal": f'Converge::User::"{user}"',
            "action": 'Converge::Action::"create"',
            "resource": f'Converge::Environment::"{claim["environment_name"]}"',
            "context": {"source": {"kind": "dir", "name": "bench", "static": False}, "time": now},
        },
        "entities": slice_,
        "decision": "allow",
        "reason": ["users-manage-their-pools"],
        "num_errors": 0,
    }


def write(path, data):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(data)


def fast_import_stream(items, first, seed):
    """A fast-import stream: one commit with items[:first], then one commit per item."""
    out = []
    t = 1735689600  # 2025-01-01T00:00:00Z, fixed so the same seed gives the same ids

    def commit(message, files):
        nonlocal t
        t += 60
        msg = message.encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"committer Bench <bench@example.com> {t} +0000\n".encode())
        out.append(b"data %d\n%s\n" % (len(msg), msg))
        for path, data in files:
            b = data.encode()
            out.append(f"M 100644 inline {path}\n".encode())
            out.append(b"data %d\n%s\n" % (len(b), b))
        out.append(b"\n")

    # Consecutive commits to one branch in a stream chain on their own.
    commit(f"{first} environments (seed {seed})", items[:first])
    for path, data in items[first:]:
        commit(f"add {os.path.basename(path)}", [(path, data)])
    return b"".join(out)


def build_repo(dest, items, commits, seed):
    if os.path.exists(dest):
        shutil.rmtree(dest)
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", dest], check=True, env=env)
    first = max(1, len(items) - commits)
    stream = fast_import_stream(items, first, seed)
    subprocess.run(["git", "-C", dest, "fast-import", "--quiet"], input=stream, check=True, env=env)
    # git daemon serves only repositories that opt in (or --export-all).
    write(os.path.join(dest, "git-daemon-export-ok"), "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of claims (10,000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--git", action="store_true", help="also build repo.git")
    ap.add_argument("--commits", type=int, default=1000, help="one-claim commits in repo.git's history")
    ap.add_argument("--now", type=int, default=1767225600, help="request time for the Cedar tests")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    claims = [make_claim(rng, i) for i in range(args.n)]
    out = args.out
    for sub in ("claims-json", "claims-yaml", "cedar"):
        path = os.path.join(out, sub)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(path)
    yaml_items = []
    for i, c in enumerate(claims):
        name = c["environment_name"]
        write(os.path.join(out, "claims-json", name + ".json"), to_json(c))
        y = to_yaml(c, i)
        write(os.path.join(out, "claims-yaml", name + ".yaml"), y)
        yaml_items.append((f"environments/{c['environment_type']}/{name}.yaml", y))
    write(os.path.join(out, "tags.yaml"), tags_yaml())
    entities = [pool_entity(p) for p in POOLS] + [user_entity(u) for u in USERS] + [env_entity(c) for c in claims]
    write(os.path.join(out, "cedar", "entities.json"), json.dumps(entities) + "\n")
    write(os.path.join(out, "cedar", "tests.json"), json.dumps([cedar_test(c, args.now) for c in claims]) + "\n")
    if args.git:
        build_repo(os.path.join(out, "repo.git"), yaml_items, min(args.commits, args.n - 1), args.seed)
    print(f"generated {args.n} claims (seed {args.seed}) in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
