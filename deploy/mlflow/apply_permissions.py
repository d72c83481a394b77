"""Create the MLflow users of deploy/mlflow/permissions.json and give each exactly its grants.

Run by the compose job ``mlflow-init`` as the MLflow admin (MLFLOW_TRACKING_USERNAME/PASSWORD), after
the server is healthy. Idempotent: an existing user gets the password from the environment again,
and each grant is replaced by the file's, so the file is the truth on every start.

    python deploy/mlflow/apply_permissions.py deploy/mlflow/permissions.json
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def apply(spec: dict[str, Any], tracking_uri: str) -> list[str]:
    """Apply ``spec``; returns one line per change, for the job's log."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=tracking_uri)
    done = []
    for name, user in spec["users"].items():
        username, password = os.environ[user["username_env"]], os.environ[user["password_env"]]
        try:
            client.create_user(username=username, password=password)
            done.append(f"{name}: created user {username}")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.update_user_password(username=username, password=password)
            done.append(f"{name}: user {username} exists, password set from the environment")
        for resource_type, permission in user["grants"].items():
            try:
                client.revoke_user_permission(username, resource_type, "*")
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
            client.grant_user_permission(username, resource_type, "*", permission)
            done.append(f"{name}: {permission} on every {resource_type}")
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: apply_permissions.py PATH/TO/permissions.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    for line in apply(spec, os.environ["MLFLOW_TRACKING_URI"]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
