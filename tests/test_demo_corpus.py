"""The demo grammar's past-tense locative: the cat sat on the mat → le chat était sur le tapis, with agreement."""

import random
import re

from transformer.demo_corpus import LOCATIVE_PREPOSITIONS, NOUNS, demo_corpus, generate_pair

# "The small cats sat near the house." → determiner, noun, verb, preposition, place
LOCATIVE = re.compile(r"^(The|A|Two|Three) (?:\w+ )?(\w+) (sat|was|were|stood) (.+?) (the|a|two|three) .+\.$", re.I)


def locative_pairs() -> dict[str, str]:
    pairs = dict(pair for split in demo_corpus(6000, 10, 10, seed=1).values() for pair in split)
    return {en: fr for en, fr in pairs.items() if LOCATIVE.match(en)}


def test_the_past_locative_agrees_with_its_subject_and_maps_each_preposition_one_way():
    pairs = locative_pairs()
    assert len(pairs) > 1000
    plural_nouns = {en_pl for _, en_pl, *_ in NOUNS}
    prepositions = dict(LOCATIVE_PREPOSITIONS)
    for en, fr in pairs.items():
        determiner, noun, verb, preposition, _ = LOCATIVE.match(en).groups()
        plural = determiner in ("Two", "Three") or noun in plural_nouns
        assert (verb == "were") <= plural and (verb == "was") <= (not plural), en
        assert ("étaient" if plural else "était") in fr.split(), (en, fr)
        assert ("était" if plural else "étaient") not in fr.split(), (en, fr)
        # The French preposition, contracted where French needs it (près de + le → près du).
        french = prepositions[preposition].split()[0]
        assert f" {french} " in fr or (preposition == "far from" and " loin " in fr), (en, fr)
        assert " de le " not in fr and " de les " not in fr, fr
    english_to_french = {
        "The cats ": "Les chats étaient ",
        "A cat ": "Un chat était ",
        "on the mat.": "sur le tapis.",
        "near the mat.": "près du tapis.",
        "near the mats.": "près des tapis.",
        "under the table.": "sous la table.",
        "in a car.": "dans une voiture.",
    }
    for english, french in english_to_french.items():
        matching = [fr for en, fr in pairs.items() if english in en]
        assert matching, english
        assert all(french in fr for fr in matching), (english, matching)


def test_the_cat_sat_on_the_mat_is_a_sentence_of_the_grammar():
    # The seed was found by trying seeds in order; a change to the grammar's random draws needs a new one.
    assert generate_pair(random.Random(803397)) == ("The cat sat on the mat.", "Le chat était sur le tapis.")


def test_the_same_english_always_gets_the_same_french():
    rng = random.Random(5)
    translations: dict[str, str] = {}
    for _ in range(20000):
        en, fr = generate_pair(rng)
        assert translations.setdefault(en, fr) == fr, (en, fr, translations[en])
