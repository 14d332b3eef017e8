"""`--param k=v` values are typed by the contract, and bad ones are named with the fix."""

from __future__ import annotations

import pytest

from dsbridge.contract.arguments import parse_param_args


def test_values_take_the_contract_types(contract):
    values = parse_param_args(
        contract, ["merchant_id=007", "target_chargeback_rate=0.02", "lookback_days=14", "orders_path=s3://b/k=v.csv"]
    )
    assert values == {
        "merchant_id": "007",  # a string parameter stays a string
        "target_chargeback_rate": 0.02,
        "lookback_days": 14,
        "orders_path": "s3://b/k=v.csv",  # only the first = separates name and value
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("merchant_id", "is not NAME=VALUE"),
        ("=x", "is not NAME=VALUE"),
        ("colour=blue", "has no such parameter"),
        ("lookback_days=fourteen", "is not a valid integer"),
        ("target_chargeback_rate={{7*7}}", "is not a valid number"),
    ],
)
def test_bad_values_are_named(contract, item, message):
    with pytest.raises(ValueError, match=message):
        parse_param_args(contract, [item])
