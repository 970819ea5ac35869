"""Fake direct identifiers: Dutch-looking names, e-mail, phone, address and BSN (passing the 11-test).

Nothing here is real: names are drawn from short built-in lists, e-mail addresses use the reserved
example.org domain, phone numbers are random, and every BSN starts with 9 (a range not issued to residents).
"""

from __future__ import annotations

import numpy as np

FIRST_FEMALE = [
    "Anna", "Emma", "Sophie", "Julia", "Lotte", "Sanne", "Fleur", "Noor", "Zoë", "Eva", "Lieke", "Fatima",
    "Yasmina", "Amira", "Esmée", "Marieke", "Ingrid", "Petra", "Linda", "Chantal", "Naomi", "Renée", "Daphne",
    "Inge", "Mila", "Saar", "Tess", "Nina", "Hanna", "Liv", "Ayse", "Chloë",
]
FIRST_MALE = [
    "Daan", "Sem", "Lucas", "Milan", "Levi", "Finn", "Bram", "Thijs", "Jesse", "Ruben", "Mohammed", "Youssef",
    "Ömer", "Kevin", "Dennis", "Marco", "Pieter", "Jeroen", "Sander", "Mark", "René", "Stijn", "Luuk", "Noah",
    "Sven", "Tim", "Rayan", "Joël", "André", "Jan", "Kees", "Mehmet",
]
LAST = [
    "de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser", "Smit",
    "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker",
    "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf", "van der Meer", "Yilmaz", "El Amrani", "Kaya",
    "Boukhari", "Koç", "Çelik", "Sahin", "Verbeek", "van Wijk", "Kok", "Jacobs", "Vermeulen", "Willems",
]
STREETS = [
    "Dorpsstraat", "Kerkstraat", "Schoolstraat", "Molenweg", "Stationsweg", "Julianastraat", "Beatrixlaan",
    "Wilhelminaplein", "Lindenlaan", "Eikenlaan", "Rozengracht", "Havenkade", "Brinkweg", "Parallelweg",
    "Kastanjelaan", "Populierenstraat", "Prinses Irenestraat", "Oranjestraat", "Veldweg", "Sluisweg",
    "Gedempte Gracht", "Zuiderdiep", "Noordeinde", "Hoogstraat", "Achterweg", "Fazantenlaan",
]
PLACES = [
    "Amsterdam", "Rotterdam", "Utrecht", "Den Haag", "Eindhoven", "Groningen", "Tilburg", "Almere", "Breda",
    "Nijmegen", "Apeldoorn", "Haarlem", "Arnhem", "Enschede", "Zwolle", "Leeuwarden", "Maastricht", "Dordrecht",
    "Zaandam", "Delft", "Venlo", "Heerlen", "Assen", "Emmen", "Middelburg", "Lelystad",
]

_BSN_WEIGHTS = np.array([9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)


def bsn_is_valid(bsn: str) -> bool:
    """The Dutch 11-test: sum(w_i * d_i, w = 9..2) - d_9 is divisible by 11 (9 digits)."""
    if len(bsn) != 9 or not bsn.isdigit():
        return False
    d = [int(c) for c in bsn]
    return (sum(w * x for w, x in zip(_BSN_WEIGHTS.tolist(), d[:8], strict=True)) - d[8]) % 11 == 0


def fake_bsns(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct 9-digit strings starting with 9 that pass the 11-test (first draws kept on repeats)."""
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n:
        m = (n - len(chosen)) * 2 + 16
        digits = rng.integers(0, 10, size=(m, 8))
        digits[:, 0] = 9
        check = (digits @ _BSN_WEIGHTS) % 11
        ok = check < 10
        nums = (digits[ok] @ (10 ** np.arange(8, 0, -1, dtype=np.int64))) + check[ok]
        allnums = np.concatenate([chosen, nums])
        _, first = np.unique(allnums, return_index=True)
        chosen = allnums[np.sort(first)][:n]  # distinct, in order of first draw
    return np.array([f"{x:09d}" for x in chosen.tolist()], dtype=object)


_ASCII = str.maketrans("ëéèêöóïíüúäáçşıÖÇŞ", "eeeeooiiuuaacsiOCS")


def _ascii_local(name: str) -> str:
    return name.translate(_ASCII).lower().replace(" ", "")


def fake_identities(
    rng: np.random.Generator, sex: np.ndarray, household: np.ndarray, is_child: np.ndarray, age_years: np.ndarray
) -> dict[str, np.ndarray]:
    """Names, e-mail, phone and address per person; members of a household share surname and address.

    `sex` holds 1 (male) / 2 (female), `household` an integer household index per person.
    Returns arrays keyed naam, email, telefoon, adres, bsn.
    """
    n = len(sex)
    hh_codes, hh_inv = np.unique(household, return_inverse=True)
    n_hh = len(hh_codes)
    hh_last = rng.integers(0, len(LAST), n_hh)
    hh_street = rng.integers(0, len(STREETS), n_hh)
    hh_number = rng.integers(1, 180, n_hh)
    hh_place = rng.integers(0, len(PLACES), n_hh)
    hh_post = rng.integers(1000, 9999, n_hh)
    hh_letters = rng.integers(0, 26, size=(n_hh, 2))
    own_last = rng.random(n) < 0.15  # some members carry another surname
    last_idx = np.where(own_last, rng.integers(0, len(LAST), n), hh_last[hh_inv])
    f_idx = rng.integers(0, len(FIRST_FEMALE), n)
    m_idx = rng.integers(0, len(FIRST_MALE), n)
    first = np.where(sex == 2, np.array(FIRST_FEMALE, dtype=object)[f_idx], np.array(FIRST_MALE, dtype=object)[m_idx])
    last = np.array(LAST, dtype=object)[last_idx]
    naam = np.array([f"{a} {b}" for a, b in zip(first.tolist(), last.tolist(), strict=True)], dtype=object)
    tag = rng.integers(1, 999, n)
    ascii_of = {v: _ascii_local(v) for v in FIRST_FEMALE + FIRST_MALE + LAST}
    email = np.array(
        [f"{ascii_of[a]}.{ascii_of[b]}{t}@example.org"
         for a, b, t in zip(first.tolist(), last.tolist(), tag.tolist(), strict=True)],
        dtype=object,
    )
    email[is_child & (age_years < 12)] = ""
    phone_digits = rng.integers(10_000_000, 99_999_999, n)
    telefoon = np.array([f"06-{d}" for d in phone_digits.tolist()], dtype=object)
    telefoon[is_child & (age_years < 10)] = ""
    adres_hh = np.array(
        [
            f"{STREETS[s]} {h}, {p} {chr(65 + a)}{chr(65 + b)} {PLACES[pl]}"
            for s, h, p, (a, b), pl in zip(hh_street.tolist(), hh_number.tolist(), hh_post.tolist(),
                                           hh_letters.tolist(), hh_place.tolist(), strict=True)
        ],
        dtype=object,
    )
    return {
        "naam": naam,
        "email": email,
        "telefoon": telefoon,
        "adres": adres_hh[hh_inv],
        "bsn": fake_bsns(rng, n),
    }
