"""Recipes (host/recipes.py): a preset, and any role chosen after a ':'."""
from __future__ import annotations

import pytest

from host.recipes import RECIPES, ROLES, parse_recipe
from host.settings import SETTINGS


def test_a_preset_is_its_table_and_overrides_replace_roles():
    assert parse_recipe("fp8-ibm") == RECIPES["fp8-ibm"] and tuple(RECIPES["fp8-ibm"]) == ROLES
    r = parse_recipe("fp8-ibm: acc = fp32 ,chunk=0,weights=float<4,3,fn>,rounding=nearest_even,")
    assert r == {**RECIPES["fp8-ibm"], "acc": "fp32", "chunk": 0, "weights": "e4m3fn", "rounding": "nearest_even"}
    assert parse_recipe("fp8-ibm-nochunk:chunk=64") == RECIPES["fp8-ibm"]


@pytest.mark.parametrize("text, message", [
    ("fp4", "'fp4' is not a recipe; start with one of fp8-ibm, fp8-ibm-nochunk"),
    ("fp8-ibm:acc", "'acc': overrides are role=value with a role among weights, activations"),
    ("fp8-ibm:bias=fp32", "'bias=fp32': overrides are role=value"),
    ("fp8-ibm:chunk=-1", "chunk=-1: the terms per partial sum, an integer >= 0"),
    ("fp8-ibm:chunk=2147483648", "chunk=2147483648: the terms per partial sum"),
    ("fp8-ibm:rounding=up2", "rounding=up2: choose one of nearest_even, nearest_away"),
    ("fp8-ibm:update=fp99", "cannot parse number format 'fp99'"),
])
def test_a_bad_recipe_says_which_part_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe(text)
    with pytest.raises(ValueError, match="recipe: "):            # the setting refuses it, naming itself
        SETTINGS["recipe"].check(text)
