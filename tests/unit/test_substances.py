"""Substance codes from generic names, and the allergy and interaction warnings (pure)."""

from prescriptions import substances as s


def test_codes_are_normalised_generic_names_split_for_combinations():
    assert s.substances_of("Aspirin") == {"aspirin"}
    assert s.substances_of("  Clavulanic   Acid ") == {"clavulanic acid"}
    assert s.substances_of("amoxicillin and clavulanic acid") == {"amoxicillin", "clavulanic acid"}
    assert s.substances_of("loratadine/pseudoephedrine") == {"loratadine", "pseudoephedrine"}
    assert s.substances_of("codeine + paracetamol") == {"codeine", "paracetamol"}
    assert s.substances_of("povidone-iodine") == {"povidone-iodine"}
    assert s.is_valid_code("warfarin") and not s.is_valid_code("Warfarin")
    assert not s.is_valid_code("x" * 101) and not s.is_valid_code("")


def test_pairs_are_stored_in_code_point_order():
    assert s.pair("warfarin", "aspirin") == ("aspirin", "warfarin")
    assert s.pair("aspirin", "warfarin") == ("aspirin", "warfarin")


def _med(pid, generic, source="this_order", order="o1", at=None):
    return s.Medicine(pid, generic.title(), s.substances_of(generic), source, order, at)


TABLE = [
    s.Interaction("aspirin", "warfarin", "major", "bleeding"),
    s.Interaction("clarithromycin", "simvastatin", "contraindicated", "pause the statin"),
]


def test_an_interacting_pair_within_the_order_is_named_once():
    ordered = [_med(1, "warfarin"), _med(2, "aspirin")]
    (w,) = s.warnings(ordered, [], [], TABLE)
    assert (w["code"], w["severity"], w["substances"]) == (
        "interaction",
        "major",
        ["aspirin", "warfarin"],
    )
    assert (w["product_id"], w["interacts_with"]["product_id"]) == (1, 2)
    assert s.pairs_to_check(ordered, []) == {("aspirin", "warfarin")}


def test_current_medication_counts_and_the_most_severe_comes_first():
    ordered = [_med(1, "aspirin"), _med(2, "simvastatin")]
    current = [
        _med(3, "warfarin", "open_order", "o2"),
        _med(4, "clarithromycin", "dispensed", "o3", "2026-11-30T10:00:00+00:00"),
    ]
    found = s.warnings(ordered, current, [], TABLE)
    assert [(w["severity"], w["interacts_with"]["source"]) for w in found] == [
        ("contraindicated", "dispensed"),
        ("major", "open_order"),
    ]
    assert "dispensed to the patient on 2026-11-30" in found[0]["message"]
    # Pairs among the current medicines alone are not this order's to warn about.
    assert (
        s.warnings(
            [_med(5, "paracetamol")], current + [_med(6, "aspirin", "open_order")], [], TABLE
        )
        == []
    )


def test_an_allergy_matches_a_product_containing_the_substance():
    allergies = [s.Allergy("amoxicillin", "Amoxicillin", "hives")]
    ordered = [_med(1, "amoxicillin and clavulanic acid"), _med(2, "paracetamol")]
    (w,) = s.warnings(ordered, [], allergies, [])
    assert (w["code"], w["severity"], w["product_id"], w["substances"]) == (
        "allergy",
        "contraindicated",
        1,
        ["amoxicillin"],
    )
    assert "(reaction: hives)" in w["message"]
