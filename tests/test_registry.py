import pytest

from privsplit.errors import ConfigError
from privsplit.registry import Registry


def test_register_create_names():
    reg = Registry("widget")

    @reg.register("b")
    def make_b(x=1):
        return ("b", x)

    reg.register("a")(lambda: "a")
    assert reg.names() == ["a", "b"]
    assert reg.create("b", x=3) == ("b", 3)
    assert "a" in reg and "c" not in reg


def test_unknown_name_lists_valid_choices():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(ConfigError, match="unknown widget 'beta'; valid choices: alpha"):
        reg.create("beta")


def test_duplicate_registration_refused():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(lambda: 2)
