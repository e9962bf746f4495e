"""Objects for tests of (and against) the fake: an agent pod spec as the runtime writes one."""

from __future__ import annotations

import base64
from typing import Any

AGENT_PORT = 8080
TOKEN_PATH = "/run/convoy/secret/token"


def agent_pod_spec(
    secret: str, *, restart: str = "Never", template: str = "default", spare: bool = False
) -> dict[str, Any]:
    """A pod spec running the convoy agent the way the sandbox image does, its token from the
    Secret ``secret`` (key ``token``) mounted at ``TOKEN_PATH``."""
    args = [
        "-I",
        "-X",
        "utf8",
        "-m",
        "sandbox_agent",
        "--host",
        "0.0.0.0",
        "--port",
        str(AGENT_PORT),
        "--workspace",
        "/data/workspace",
        "--state-dir",
        "/data/state",
        "--token-file",
        TOKEN_PATH,
        "--run-as",
        "10001:10001",
        "--claim-file",
        "/data/agent/claim.json",
        "--template",
        template,
        *(["--spare"] if spare else []),
    ]
    return {
        "restartPolicy": restart,
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "agent",
                "image": "convoy-sandbox:latest",
                "command": ["/opt/convoy/bin/python3"],
                "args": args,
                "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
                "env": [{"name": "CONVOY_AGENT_LOG_LEVEL", "value": "warning"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "agent"}, "periodSeconds": 1},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {"limits": {"memory": "256Mi", "cpu": "1"}},
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "agent", "mountPath": "/data/agent"},
                    {"name": "token", "mountPath": "/run/convoy/secret", "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "agent", "emptyDir": {}},
            {"name": "token", "secret": {"secretName": secret, "defaultMode": 0o400}},
        ],
    }


def token_secret(name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
