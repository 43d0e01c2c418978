"""The currencies meterflow accepts: the three-letter ISO 4217 codes Stripe lists as supported
presentment currencies (https://docs.stripe.com/currencies), lower-cased as Stripe writes them.
Amounts are always in the currency's minor unit, whatever its exponent."""

from __future__ import annotations

_CODES = """
    aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn
    bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd
    gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak
    lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd
    omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std
    szl thb tjs tnd top try ttd twd tzs uah ugx usd uyu uzs vnd vuv wst xaf xcd xof xpf yer zar
    zmw
"""
CURRENCIES = frozenset(_CODES.split())
