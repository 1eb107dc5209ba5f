"""ISO 4217: the active currency codes and the decimals of each one's minor unit.

From the ISO 4217 list of current currencies (table A.1, amendment 179 of 2025). Not
CLDR's display precision (what Babel knows): CLDR shows Iraqi dinar with no decimals
where ISO counts three, and Lao kip with none where ISO counts two. Amounts are stored in
ISO minor units, so the exponent comes from here. Funds codes (BOV, CLF, COU, MXV, USN,
UYI, UYW, CHE, CHW) and the precious metals, testing and "no currency" codes (XAU, XTS,
XXX …) are not currencies a sale is paid in and are left out.
"""

from __future__ import annotations

# Everything not named below has two decimals.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR "
    "ZMW ZWG"
)

MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO.split(), 2),
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
}


def is_iso_currency(code: str) -> bool:
    """An active ISO 4217 code a sale can be paid in (upper case, as the API takes it)."""
    return code in MINOR_UNITS


def minor_units(code: str) -> int | None:
    """Decimals of the code's minor unit (JPY 0, USD 2, KWD 3); None for a code not listed."""
    return MINOR_UNITS.get(code)
