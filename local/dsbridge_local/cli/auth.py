"""`dsbridge auth fab-role`: the FAB role of the optimization service, for production deployments."""

from __future__ import annotations

import argparse
import json


def run_fab_role(args: argparse.Namespace) -> int:
    # Imported here: the FAB provider is only needed by this command.
    from dsbridge.auth.fab_role import report, role_import_entries, write_service_role

    if args.json:
        print(json.dumps(role_import_entries(), indent=2))
        return 0
    print(report(write_service_role()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    auth = subparsers.add_parser("auth", help="Airflow access control for the optimization service")
    actions = auth.add_subparsers(dest="action", metavar="ACTION", required=True)
    fab_role = actions.add_parser(
        "fab-role",
        help="create (or reset) the FAB role `dsbridge_service` with the minimal permissions",
        description=(
            "Create the FAB role dsbridge_service, or reset its permissions to exactly the minimal set, in the "
            "Airflow database the AIRFLOW__* environment names. Use it with "
            "AIRFLOW__CORE__AUTH_MANAGER=dsbridge.auth.fab.DsbridgeFabAuthManager, which holds the role's users "
            "to the service policy (see docs/security.md)."
        ),
    )
    fab_role.add_argument(
        "--json", action="store_true", help="print the role for `airflow roles import` instead of writing it"
    )
    fab_role.set_defaults(func=run_fab_role)
