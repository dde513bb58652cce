"""The embedded demo corpus: a seeded generator of English→French pairs from a small grammar.

Small enough to learn in minutes on a CPU, it still needs what real translation needs: gender and number agreement
(le/la/les, noir/noire/noirs/noires), adjectives after the noun (a few before it), conjugated verbs (dort/dorment), a
past tense whose verb agrees with its subject (the cats were under the table → les chats étaient sous la table) and
contractions (près du, au, aux). A hash of each English sentence picks its split, so no two splits share one.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

# English singular, English plural, French singular, French plural, gender
NOUNS = [
    ("cat", "cats", "chat", "chats", "m"),
    ("dog", "dogs", "chien", "chiens", "m"),
    ("horse", "horses", "cheval", "chevaux", "m"),
    ("boat", "boats", "bateau", "bateaux", "m"),
    ("garden", "gardens", "jardin", "jardins", "m"),
    ("book", "books", "livre", "livres", "m"),
    ("boy", "boys", "garçon", "garçons", "m"),
    ("house", "houses", "maison", "maisons", "f"),
    ("car", "cars", "voiture", "voitures", "f"),
    ("apple", "apples", "pomme", "pommes", "f"),
    ("table", "tables", "table", "tables", "f"),
    ("flower", "flowers", "fleur", "fleurs", "f"),
    ("girl", "girls", "fille", "filles", "f"),
    ("woman", "women", "femme", "femmes", "f"),
    ("chair", "chairs", "chaise", "chaises", "f"),
    ("bicycle", "bicycles", "bicyclette", "bicyclettes", "f"),
    ("mat", "mats", "tapis", "tapis", "m"),
]

# English, French (masc. sing., fem. sing., masc. plur., fem. plur.), placed before the noun?
ADJECTIVES = [
    ("black", ("noir", "noire", "noirs", "noires"), False),
    ("red", ("rouge", "rouge", "rouges", "rouges"), False),
    ("green", ("vert", "verte", "verts", "vertes"), False),
    ("blue", ("bleu", "bleue", "bleus", "bleues"), False),
    ("white", ("blanc", "blanche", "blancs", "blanches"), False),
    ("tired", ("fatigué", "fatiguée", "fatigués", "fatiguées"), False),
    ("happy", ("heureux", "heureuse", "heureux", "heureuses"), False),
    ("small", ("petit", "petite", "petits", "petites"), True),
    ("big", ("grand", "grande", "grands", "grandes"), True),
    ("pretty", ("joli", "jolie", "jolis", "jolies"), True),
    ("young", ("jeune", "jeune", "jeunes", "jeunes"), True),
]

# English 3rd singular, English 3rd plural, French 3rd singular, French 3rd plural
INTRANSITIVE = [
    ("sleeps", "sleep", "dort", "dorment"),
    ("runs", "run", "court", "courent"),
    ("plays", "play", "joue", "jouent"),
    ("waits", "wait", "attend", "attendent"),
    ("walks", "walk", "marche", "marchent"),
]
TRANSITIVE = [
    ("sees", "see", "voit", "voient"),
    ("likes", "like", "aime", "aiment"),
    ("watches", "watch", "regarde", "regardent"),
    ("follows", "follow", "suit", "suivent"),
    ("finds", "find", "trouve", "trouvent"),
]

# English preposition, French preposition; "de" and "à" contract with le/les (du, des, au, aux).
PREPOSITIONS = [("near", "près de"), ("far from", "loin de"), ("behind", "derrière"), ("in front of", "devant")]

# Where something was: "X sat/was/stood <preposition> Y" → "X était/étaient <préposition> Y". French says where, not
# the posture, so all three verbs become était (étaient for a plural subject): one English word, one French word.
PAST_LOCATIVE_VERBS = [("sat", "sat"), ("was", "were"), ("stood", "stood")]  # English singular, English plural
LOCATIVE_PREPOSITIONS = [("on", "sur"), ("under", "sous"), ("in", "dans"), *PREPOSITIONS]

# The French article of each English determiner: masc. sing., fem. sing., masc. plur., fem. plur. ("a" is singular).
ARTICLES = {"the": ("le", "la", "les", "les"), "a": ("un", "une"), "two": ("deux",) * 4, "three": ("trois",) * 4}
CONTRACTIONS = {"de le": "du", "de les": "des", "de un": "d'un", "de une": "d'une", "à le": "au", "à les": "aux"}


@dataclass(frozen=True)
class NounPhrase:
    english: str
    french_words: tuple[str, ...]  # without the article, so that prepositions can contract with it
    article: str  # le, la, les, un, une, deux, ...

    def french(self) -> str:
        return " ".join((self.article, *self.french_words))


def _noun_phrase(rng: random.Random) -> tuple[NounPhrase, bool]:
    en_sg, en_pl, fr_sg, fr_pl, gender = rng.choice(NOUNS)
    plural = rng.random() < 0.4
    determiner = rng.choice(["the", "the", "two", "three"] if plural else ["the", "the", "a"])
    adjective = rng.choice(ADJECTIVES) if rng.random() < 0.6 else None
    slot = (gender == "f") + 2 * plural
    english, french = [determiner, en_pl if plural else en_sg], [fr_pl if plural else fr_sg]
    if adjective is not None:
        en_adj, forms, before = adjective
        english.insert(1, en_adj)
        french.insert(0 if before else 1, forms[slot])
    return NounPhrase(" ".join(english), tuple(french), ARTICLES[determiner][slot]), plural


def _with_preposition(french_prep: str, np: NounPhrase) -> str:
    """près de + le chat → près du chat; près de + un chat → près d'un chat; à + les maisons → aux maisons."""
    *head, last = french_prep.split()
    joined = f"{last} {np.article}"
    return " ".join([*head, CONTRACTIONS.get(joined, joined), *np.french_words])


def generate_pair(rng: random.Random) -> tuple[str, str]:
    """One English sentence and its French translation."""
    subject, plural = _noun_phrase(rng)
    kind = rng.random()
    if kind < 0.25:  # where it was: the cat sat on the mat → le chat était sur le tapis
        en_sg, en_pl = rng.choice(PAST_LOCATIVE_VERBS)
        en_prep, fr_prep = rng.choice(LOCATIVE_PREPOSITIONS)
        place, _ = _noun_phrase(rng)
        english = [subject.english, en_pl if plural else en_sg, en_prep, place.english]
        french = [subject.french(), "étaient" if plural else "était", _with_preposition(fr_prep, place)]
    elif kind < 0.5:
        en_sg, en_pl, fr_sg, fr_pl = rng.choice(INTRANSITIVE)
        english = [subject.english, en_pl if plural else en_sg]
        french = [subject.french(), fr_pl if plural else fr_sg]
    elif kind < 0.85:
        en_sg, en_pl, fr_sg, fr_pl = rng.choice(TRANSITIVE)
        obj, _ = _noun_phrase(rng)
        english = [subject.english, en_pl if plural else en_sg, obj.english]
        french = [subject.french(), fr_pl if plural else fr_sg, obj.french()]
    else:
        place, _ = _noun_phrase(rng)
        english = [subject.english, "go to" if plural else "goes to", place.english]
        french = [subject.french(), "vont" if plural else "va", _with_preposition("à", place)]
    if kind >= 0.25 and rng.random() < 0.4:  # a trailing place, but not after a locative: it already says where
        en_prep, fr_prep = rng.choice(PREPOSITIONS)
        place, _ = _noun_phrase(rng)
        english += [en_prep, place.english]
        french += [_with_preposition(fr_prep, place)]
    return _sentence(english), _sentence(french)


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def demo_corpus(train_size: int, dev_size: int, test_size: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """Distinct pairs for train, dev and test, from a seeded generator."""
    rng = random.Random(seed)
    wanted = {"train": train_size, "dev": dev_size, "test": test_size}
    total = train_size + dev_size + test_size
    # Route a larger share to the small splits so that they fill up early, then keep only what each split needs.
    dev_share, test_share = max(dev_size / total, 0.05), max(test_size / total, 0.05)
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in wanted}
    seen: set[str] = set()
    for _ in range(50 * total):
        if all(len(splits[n]) >= wanted[n] for n in wanted):
            break
        en, fr = generate_pair(rng)
        if en in seen:
            continue
        seen.add(en)
        h = int.from_bytes(hashlib.sha1(en.encode("utf-8")).digest()[:8], "big") / 2**64  # its hash fixes its split
        name = "test" if h < test_share else "dev" if h < test_share + dev_share else "train"
        if len(splits[name]) < wanted[name]:
            splits[name].append((en, fr))
    return splits
