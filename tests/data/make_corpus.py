"""Write the small synthetic corpus of the unit tests (tests/data/corpus/*.jsonl), made here, copied from nowhere.

    python tests/data/make_corpus.py

Four sources shaped like the real training data: short questions, news sentences, dictionary glosses and
passages, built from a fixed word list and recurring phrases (so that n-grams and skip-grams are mined), with
some punctuation, digits, accents and CJK characters. Seeded: the files are the same on every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus"
PHRASES = [
    "new york city",
    "interest rate",
    "united states",
    "stock market",
    "oil price",
    "health care",
    "high school",
    "real estate",
    "climate change",
    "machine learning",
    "credit card",
    "world war",
    "prime minister",
    "central bank",
    "human body",
    "blood pressure",
    "social media",
    "united nations",
]
NOUNS = (
    "bank company market price year government city state country water health school music game world house "
    "car people time day week month river mountain island computer phone energy power food wine coffee tea "
    "doctor patient hospital student teacher university court law tax dollar euro yen rate loan debt export "
    "import trade crop wheat corn sugar gold silver steel copper protein cell gene virus disease drug study "
    "report plan policy election vote team player season film book song art history science theory data"
).split()
VERBS = (
    "is was raises cuts reports says shows causes helps makes takes gives finds keeps leaves affects reduces "
    "increases announces expects plans builds sells buys grows falls rises"
).split()
ADJECTIVES = (
    "new old high low large small early late public private national local global strong weak annual total "
    "human medical economic financial chemical cheap expensive common rare"
).split()
QUESTIONS = ["what is", "how to", "how much does", "what causes", "where is", "when did", "who invented", "why do"]
EXTRAS = ["café", "naïve", "résumé", "東京", "北京", "3.5%", "$120", "1987", "e-mail", "U.S.", "(see below)", "—"]


def phrase(rng: random.Random) -> str:
    return rng.choice(PHRASES) if rng.random() < 0.3 else f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def sentence(rng: random.Random) -> str:
    words = [phrase(rng).capitalize(), rng.choice(VERBS), "the", phrase(rng)]
    if rng.random() < 0.5:
        words += ["of", "the", rng.choice(NOUNS)]
    if rng.random() < 0.2:
        words.append(rng.choice(EXTRAS))
    return " ".join(words) + rng.choice([".", ".", ".", ";", "!"])


def records(rng: random.Random, source: str, count: int) -> list[dict]:
    result = []
    for number in range(count):
        if source == "queries":
            text = f"{rng.choice(QUESTIONS)} {phrase(rng)}" + (f" {rng.choice(NOUNS)}" if rng.random() < 0.5 else "")
        elif source == "sentences":
            text = sentence(rng)
        elif source == "glosses":
            text = f"a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} that {rng.choice(VERBS)} {phrase(rng)}"
        else:
            text = " ".join(sentence(rng) for _ in range(rng.randint(4, 12)))
        result.append({"id": f"{source}-{number}", "text": text})
    return result


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for seed, (source, count) in enumerate((("queries", 400), ("sentences", 400), ("glosses", 300), ("passages", 250))):
        rng = random.Random(seed)
        with open(OUT / f"{source}.jsonl", "w", encoding="utf-8") as handle:
            for record in records(rng, source, count):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
