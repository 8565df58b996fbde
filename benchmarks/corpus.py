"""Deterministic benchmark inputs: fictional prose of any length and a fictional FAQ.

Everything here is generated from a fixed seed, so every run (and every machine)
summarizes exactly the same text. Nothing is downloaded.

    python benchmarks/corpus.py faq > benchmarks/data/big_faq.md
    python benchmarks/corpus.py prose --sentences 400 > /tmp/doc.txt
"""

from __future__ import annotations

import argparse
import random
import sys

_PLACES = [
    "Harbor Point",
    "Lindenfeld",
    "Orchard Bay",
    "Kestrel Ridge",
    "Millbrook",
    "Saltmarsh",
    "Ashgrove",
    "Port Vell",
]
_PEOPLE = [
    "the night-shift engineers",
    "the harbor council",
    "a team of volunteers",
    "the regional planners",
    "two visiting surveyors",
    "the ferry operators",
    "local shopkeepers",
    "the school board",
]
_THINGS = [
    "the tidal power station",
    "the old lighthouse",
    "a new cycling bridge",
    "the grain cooperative",
    "the public library",
    "the water treatment plant",
    "the community radio",
    "the railway depot",
]
_VERBS = ["inspected", "repaired", "expanded", "reopened", "measured", "redesigned", "surveyed", "documented"]
_REASONS = [
    "after the winter storms",
    "to cut energy costs",
    "because ridership had doubled",
    "ahead of the spring festival",
    "following complaints about noise",
    "to meet new safety rules",
    "when the budget was approved",
    "after a long public consultation",
]
_RESULTS = [
    "the work finished two weeks early",
    "costs came in below the estimate",
    "residents reported fewer outages",
    "the project needed a second phase",
    "visitor numbers rose by a third",
    "several problems remained open",
    "the council published a detailed report",
    "a similar plan was proposed for the next town",
]


def prose(sentences: int, seed: int = 2024) -> str:
    """`sentences` sentences of a fictional town chronicle, in paragraphs of about six."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    current: list[str] = []
    for index in range(sentences):
        year = 1990 + rng.randrange(35)
        sentence = (
            f"In {year}, {rng.choice(_PEOPLE)} in {rng.choice(_PLACES)} {rng.choice(_VERBS)} "
            f"{rng.choice(_THINGS)} {rng.choice(_REASONS)}, and {rng.choice(_RESULTS)}."
        )
        current.append(sentence)
        if len(current) == 6 or index == sentences - 1:
            paragraphs.append(" ".join(current))
            current = []
    return "\n\n".join(paragraphs) + "\n"


_PRODUCTS = [
    "Trail Jacket",
    "Canvas Tote",
    "Wool Beanie",
    "Rain Boots",
    "Linen Shirt",
    "Down Vest",
    "Hiking Socks",
    "Travel Mug",
    "Field Notebook",
    "Camp Blanket",
    "Leather Belt",
    "Fleece Gloves",
]
_COLORS = ["moss green", "slate grey", "rust orange", "navy", "oat", "charcoal"]
_COUNTRIES = ["Canada", "Mexico", "Japan", "Norway", "Portugal", "Australia", "Chile", "Kenya", "Ireland", "Korea"]


def faq(seed: int = 7) -> str:
    """A Markdown FAQ of a fictional shop (Maple & Moss), about 3,000 tokens."""
    rng = random.Random(seed)
    out = [
        "# Maple & Moss extended FAQ",
        "",
        "This file answers the questions customers ask most often. Prices are in euros and include VAT.",
        "",
    ]
    out += ["## Products", ""]
    for product in _PRODUCTS:
        price = rng.randrange(12, 180)
        colors = ", ".join(rng.sample(_COLORS, 3))
        weeks = rng.randrange(2, 9)
        out += [
            f"### {product}",
            "",
            f"The {product} costs {price} euros and comes in {colors}. "
            f"It is covered by a {rng.choice([1, 2, 3])}-year warranty against manufacturing defects. "
            f"Out-of-stock sizes are restocked within about {weeks} weeks; customers can ask for an email alert "
            f"on the product page. Care: {rng.choice(['machine wash cold', 'hand wash only', 'wipe clean with a damp cloth', 'dry clean'])}.",
            "",
        ]
    out += ["## Shipping by country", ""]
    for country in _COUNTRIES:
        days = rng.randrange(3, 15)
        fee = rng.randrange(5, 30)
        free = rng.choice([60, 80, 100, 150])
        out += [
            f"### Shipping to {country}",
            "",
            f"Orders to {country} arrive in {days} to {days + 4} business days. Shipping costs {fee} euros, "
            f"and it is free for orders over {free} euros. Customs duties, if any, are paid by the customer on delivery. "
            f"Tracking numbers are emailed when the parcel leaves our warehouse in Ghent.",
            "",
        ]
    out += ["## Orders, returns and payments", ""]
    policies = [
        (
            "Changing an order",
            "An order can be changed or cancelled within 2 hours of purchase from Orders > Edit. After that it is already being packed; return it instead.",
        ),
        (
            "Returns",
            "Unworn items can be returned within 30 days of delivery for a full refund. Sale items can be exchanged but not refunded.",
        ),
        (
            "Refund timing",
            "Refunds reach the original payment method 5 to 10 business days after the return arrives at the warehouse.",
        ),
        (
            "Damaged parcels",
            "Photograph a damaged parcel before opening it and send the photos within 48 hours; we ship a replacement at no cost.",
        ),
        (
            "Payment methods",
            "We accept Visa, Mastercard, PayPal, Bancontact and bank transfer. Bank transfers must arrive within 7 days or the order is cancelled.",
        ),
        (
            "Gift cards",
            "Gift cards are valid for 2 years, can be combined with other payment methods, and cannot be exchanged for cash.",
        ),
        (
            "Loyalty points",
            "Each euro spent earns one point; 200 points give a 10 euro voucher. Points expire after 18 months without a purchase.",
        ),
        (
            "Student discount",
            "Students get 15 percent off full-price items after verifying their student email once a year.",
        ),
        (
            "Repairs",
            "Our repair service mends zips, seams and soles for a flat fee of 15 euros, free during the warranty period.",
        ),
        (
            "Privacy",
            "We never sell customer data. Customers can download or delete their data from Account > Privacy at any time.",
        ),
    ]
    for title, text in policies:
        out += [f"### {title}", "", text, ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("faq", help="the fictional FAQ (benchmarks/data/big_faq.md)")
    text = sub.add_parser("prose", help="fictional prose")
    text.add_argument("--sentences", type=int, default=100)
    text.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    sys.stdout.write(faq() if args.what == "faq" else prose(args.sentences, args.seed))


if __name__ == "__main__":
    main()
