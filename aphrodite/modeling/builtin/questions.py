"""Question/answer generators over the fact tables: each draws one (question, answer) pair.

Several phrasings per fact teach the model the meaning rather than one string. Every generator is a
function of a ``random.Random`` only, so the corpus is fixed by its seed.
"""

from __future__ import annotations

import random
from typing import Callable

from aphrodite.modeling.builtin import knowledge as kb

QA = tuple[str, str]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def capital(rng: random.Random) -> QA:
    country, city, continent, language = rng.choice(kb.COUNTRIES)
    return rng.choice([
        (f"What is the capital of {country}?", f"The capital of {country} is {city}."),
        (f"Which city is the capital of {country}?", f"{city} is the capital of {country}."),
        (f"Tell me the capital of {country}.", f"The capital of {country} is {city}."),
        (f"{city} is the capital of which country?", f"{city} is the capital of {_cap(country)}."),
        (f"What language do people speak in {country}?", f"People in {country} speak {language}."),
        (f"On which continent is {country}?", f"{_cap(country)} is in {continent}."),
        (f"Where is {city}?", f"{city} is in {country}, in {continent}."),
    ])


def animal(rng: random.Random) -> QA:
    name, plural, sound, klass, home, legs = rng.choice(kb.ANIMALS)
    article = "an" if klass[0] in "aeiou" else "a"
    return rng.choice([
        (f"What sound does a {name} make?", f"A {name} {sound}."),
        (f"What kind of animal is a {name}?", f"A {name} is {article} {klass}."),
        (f"Where do {plural} live?", f"{_cap(plural)} live {home}."),
        (f"How many legs does a {name} have?", f"A {name} has {kb.NUMBER_WORDS[legs]} legs."),
        (f"What is the plural of {name}?", f"The plural of {name} is {plural}."),
    ])


def colour(rng: random.Random) -> QA:
    thing, col = rng.choice(kb.COLOURS)
    return rng.choice([(f"What colour is {thing}?", f"{_cap(thing)} is {col}."),
                       (f"What is the colour of {thing}?", f"The colour of {thing} is {col}.")])


def opposite(rng: random.Random) -> QA:
    word, other = rng.choice(kb.OPPOSITES)
    if rng.random() < 0.5:
        word, other = other, word
    return rng.choice([(f"What is the opposite of {word}?", f"The opposite of {word} is {other}."),
                       (f"Give me the opposite of the word {word}.", f"The opposite of {word} is {other}.")])


def calendar(rng: random.Random) -> QA:
    names, unit = rng.choice([(kb.DAYS, "day"), (kb.MONTHS, "month")])
    i = rng.randrange(len(names))
    nxt, prev = names[(i + 1) % len(names)], names[i - 1]
    return rng.choice([
        (f"What {unit} comes after {names[i]}?", f"{nxt} comes after {names[i]}."),
        (f"What {unit} comes before {names[i]}?", f"{prev} comes before {names[i]}."),
        (f"Which {unit} is number {i + 1} in the list?", f"{names[i]} is {unit} number {i + 1}."),
    ])


def planet(rng: random.Random) -> QA:
    i = rng.randrange(len(kb.PLANETS))
    return rng.choice([
        (f"Which planet is {ORDINALS[i]} from the Sun?", f"{kb.PLANETS[i]} is the {ORDINALS[i]} planet from the Sun."),
        (f"How far from the Sun is {kb.PLANETS[i]}?", f"{kb.PLANETS[i]} is the {ORDINALS[i]} planet from the Sun."),
        ("How many planets are in the solar system?", "There are eight planets in the solar system."),
    ])


def arithmetic(rng: random.Random) -> QA:
    op = rng.choice("+-*/")
    if op == "*" or op == "/":
        a, b = rng.randint(0, 12), rng.randint(1, 12)
        a, b, c = (a, b, a * b) if op == "*" else (a * b, b, a)
    else:
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        a, b = (a, b) if op == "+" or a >= b else (b, a)
        c = a + b if op == "+" else a - b
    word = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}[op]
    if c <= 20 and a <= 20 and b <= 20 and rng.random() < 0.25:
        wa, wb, wc = kb.NUMBER_WORDS[a], kb.NUMBER_WORDS[b], kb.NUMBER_WORDS[c]
        return f"What is {wa} {word} {wb}?", f"{_cap(wa)} {word} {wb} is {wc}."
    return rng.choice([(f"What is {a} {word} {b}?", f"{a} {word} {b} is {c}."),
                       (f"What is {a} {op} {b}?", f"{a} {op} {b} = {c}."),
                       (f"Calculate {a} {op} {b}.", f"{a} {op} {b} = {c}.")])


def counting(rng: random.Random) -> QA:
    n = rng.randint(0, 99)
    start = rng.randint(1, 20)
    end = start + rng.randint(2, 6)
    seq = ", ".join(str(i) for i in range(start, end + 1))
    return rng.choice([(f"What number comes after {n}?", f"{n + 1} comes after {n}."),
                       (f"What number comes before {n + 1}?", f"{n} comes before {n + 1}."),
                       (f"Count from {start} to {end}.", f"{seq}."),
                       (f"Is {n} even or odd?", f"{n} is {'even' if n % 2 == 0 else 'odd'}.")])


def spelling(rng: random.Random) -> QA:
    word = rng.choice([a[0] for a in kb.ANIMALS] + [w for pair in kb.OPPOSITES for w in pair])
    return rng.choice([(f"How do you spell {word}?", f"{word} is spelled {'-'.join(word)}."),
                       (f"How many letters are in the word {word}?",
                        f"The word {word} has {kb.NUMBER_WORDS[len(word)]} letters.")])


def fact(rng: random.Random) -> QA:
    return rng.choice(kb.FACTS)


def small_talk(rng: random.Random) -> QA:
    return rng.choice(kb.SMALL_TALK)


# (generator, relative weight) for the questions of a dialogue.
GENERATORS: list[tuple[Callable[[random.Random], QA], float]] = [
    (capital, 3.0), (animal, 2.0), (colour, 1.0), (opposite, 1.0), (calendar, 1.0), (planet, 0.5),
    (arithmetic, 3.0), (counting, 1.0), (spelling, 0.5), (fact, 2.0), (small_talk, 1.0),
]


def draw(rng: random.Random) -> QA:
    """One question/answer pair from a generator chosen by weight."""
    fns, weights = zip(*GENERATORS)
    return rng.choices(fns, weights)[0](rng)
