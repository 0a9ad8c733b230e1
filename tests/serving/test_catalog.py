"""The action catalog is validated completely, with the action and field named, before serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kundenwert.datasets.design import CATEGORIES
from kundenwert.errors import ConfigurationError
from kundenwert.serving.catalog import DEFAULT_CATALOG, Formula, load_catalog

ONE = """
[[actions]]
id = "retention_voucher"
kind = "retention"
title = "Voucher"
channels = { email = 0.05 }
value = "clv * churn * save_rate"
params = { save_rate = 0.2 }
"""


def test_the_default_catalog_fits_the_sample_world() -> None:
    catalog = load_catalog()
    assert DEFAULT_CATALOG.exists()
    catalog.check_names(list(CATEGORIES))
    kinds = {a.kind for a in catalog.actions}
    assert kinds == {"cross_sell", "retention", "win_back", "upsell", "service_follow_up", "newsletter"}
    assert {a.category for a in catalog.actions if a.kind == "cross_sell"} == set(CATEGORIES)
    # the action's own policy overrides the catalog default field by field
    call = catalog.channel_policy(catalog.action("service_call"), "phone")
    assert call.min_days_between == 3 and call.max_contacts_30d == catalog.policy["phone"].max_contacts_30d


def test_formulas_evaluate_on_columns_and_refuse_anything_else() -> None:
    f = Formula("clv * max(churn, winback) - 2 / k")
    got = f(
        {
            "clv": np.array([100.0, 10.0]),
            "churn": np.array([0.5, 0.1]),
            "winback": np.array([0.2, 0.3]),
            "k": 4,
        }
    )
    np.testing.assert_allclose(got, [49.5, 2.5])
    assert f.names == {"clv", "churn", "winback", "k"}
    for bad in (
        "__import__('os').system('x')",
        "clv ** 2",
        "clv.real",
        "open('f')",
        "clv if churn else 0",
        "'a'",
    ):
        with pytest.raises(ValueError, match="not allowed|cannot parse"):
            Formula(bad)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actions.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("email = 0.05", "fax = 0.05"),
            "actions.retention_voucher.channels: Value error, unknown channel 'fax'",
        ),
        (("email = 0.05", "email = -1"), "cost of email must be a number >= 0"),
        (('kind = "retention"', 'kind = "bribe"'), "actions.retention_voucher.kind"),
        (('"clv * churn * save_rate"', '"clv ** churn"'), "'clv ** churn' is not allowed"),
        (('id = "retention_voucher"', 'id = "Retention Voucher"'), "actions.Retention Voucher.id"),
        (("params = ", "control_share = 1.5\nparams = "), "actions.retention_voucher.control_share"),
        (("params = ", "policy = { sms = { max_contacts_7d = 1 } }\nparams = "), "does not use"),
        (("params = ", "surprise = 1\nparams = "), "actions.retention_voucher.surprise"),
    ],
)
def test_invalid_actions_are_refused_by_name(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = _write(tmp_path, ONE.replace(*change))
    with pytest.raises(ConfigurationError) as info:
        load_catalog(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_names_are_checked_against_the_models_and_categories(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, ONE.replace("clv * churn * save_rate", "clv * churm")))
    with pytest.raises(
        ConfigurationError, match="retention_voucher: value formula 'clv \\* churm' uses unknown name"
    ):
        catalog.check_names(list(CATEGORIES))
    twice = load_catalog(_write(tmp_path, ONE))
    assert twice.ids == ["retention_voucher"]
    with pytest.raises(ConfigurationError, match="appear more than once"):
        load_catalog(_write(tmp_path, ONE + ONE))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_catalog(tmp_path / "nope.toml")


def test_a_catalog_path_that_is_no_file_is_refused_by_name(tmp_path: Path) -> None:
    from kundenwert.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=f"action catalog {tmp_path} cannot be read"):
        load_catalog(tmp_path)
