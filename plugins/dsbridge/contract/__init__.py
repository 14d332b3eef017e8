"""The job contract that data scientists keep next to each notebook."""

from dsbridge.contract.model import (
    CONTRACT_FILE_NAME,
    RESERVED_PARAMS,
    ContractError,
    Example,
    JobContract,
    OutputContract,
    discover_contracts,
    load_contract,
)

__all__ = [
    "CONTRACT_FILE_NAME",
    "RESERVED_PARAMS",
    "ContractError",
    "Example",
    "JobContract",
    "OutputContract",
    "discover_contracts",
    "load_contract",
]
