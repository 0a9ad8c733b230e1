"""The designed parameters of the sample CRM world.

Kept apart from the simulation so tests and models can read what the world was built to contain
(``truth/design.json`` is written from here).
"""

from __future__ import annotations

import numpy as np

CATEGORIES = (
    "electronics",
    "fashion",
    "home_garden",
    "sports_outdoor",
    "books_media",
    "beauty_health",
    "toys_kids",
    "food_drink",
)
AGE_BANDS = ("<25", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")

# Log-weight of each category by age group (rows: AGE_BANDS, columns: CATEGORIES). Every column has a
# clear shape across the six known age groups, so "how does category X sell in age group Y" has a
# designed answer to recover. "unknown" is mostly business customers.
AGE_CATEGORY_LOGWEIGHT = np.array(
    [
        #  elec  fash  home  sport books beauty toys  food
        [0.9, 1.0, -1.0, 0.5, -0.6, 0.1, -1.0, -0.4],  # <25
        [0.6, 0.6, -0.2, 0.7, -0.4, 0.2, 0.6, -0.2],  # 25-34
        [0.3, 0.2, 0.4, 0.3, -0.1, 0.3, 0.9, 0.0],  # 35-44
        [0.0, -0.1, 0.7, 0.0, 0.2, 0.5, 0.2, 0.2],  # 45-54
        [-0.4, -0.4, 0.9, -0.3, 0.6, 0.6, -0.3, 0.4],  # 55-64
        [-0.9, -0.8, 0.6, -0.7, 1.0, 0.7, -0.6, 0.6],  # 65+
        [0.5, -0.5, 0.5, 0.0, -0.5, -0.5, -0.8, 0.5],  # unknown (business, retailers, no birth year)
    ]
)

LIFESTYLES = ("budget", "family", "urban_professional", "outdoor", "tech_enthusiast", "traditional")
LIFESTYLE_CATEGORY_LOGWEIGHT = np.array(
    [
        [-0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4],  # budget
        [0.0, 0.0, 0.3, 0.0, -0.2, 0.0, 0.6, 0.3],  # family
        [0.2, 0.4, -0.2, 0.1, 0.1, 0.3, -0.3, 0.1],  # urban_professional
        [-0.1, 0.0, 0.2, 0.8, 0.0, -0.1, 0.0, 0.0],  # outdoor
        [0.8, -0.1, 0.0, 0.0, 0.2, -0.2, 0.0, -0.1],  # tech_enthusiast
        [-0.3, -0.1, 0.3, -0.2, 0.5, 0.1, 0.0, 0.2],  # traditional
    ]
)
CATEGORY_NOISE_SD = 0.3  # individual taste around the group pattern
CATEGORY_MARGIN_RATE = {
    "electronics": 0.12,
    "fashion": 0.45,
    "home_garden": 0.30,
    "sports_outdoor": 0.32,
    "books_media": 0.22,
    "beauty_health": 0.40,
    "toys_kids": 0.35,
    "food_drink": 0.25,
}
CATEGORY_RETURN_RATE = {c: (0.08 if c == "fashion" else 0.025) for c in CATEGORIES}

CUSTOMER_TYPES = ("consumer", "business", "retailer")
TYPE_SHARE = (0.82, 0.13, 0.05)
# Purchase rate per day lambda ~ Gamma(shape r, rate alpha) x attribute multipliers (BG/NBD).
BGNBD = {
    "consumer": {"r": 0.9, "alpha": 40.0, "a": 0.8, "b": 3.5},
    "business": {"r": 1.2, "alpha": 24.0, "a": 0.8, "b": 7.0},
    "retailer": {"r": 1.5, "alpha": 15.0, "a": 1.0, "b": 10.0},
}
# Spend per order z ~ Gamma(p, rate nu), nu ~ Gamma(q, rate gamma) (Gamma-Gamma); mean p*gamma/(q-1).
GAMMA_GAMMA = {
    "consumer": {"p": 6.0, "q": 3.5, "gamma": 25.0},
    "business": {"p": 5.0, "q": 4.0, "gamma": 150.0},
    "retailer": {"p": 5.0, "q": 4.0, "gamma": 400.0},
}
INCOME_BANDS = ("low", "mid", "high", "very_high")
INCOME_SHARE = (0.25, 0.45, 0.22, 0.08)
INCOME_RATE_MULT = {"low": 0.8, "mid": 1.0, "high": 1.15, "very_high": 1.3}
INCOME_SPEND_MULT = {"low": 0.75, "mid": 1.0, "high": 1.3, "very_high": 1.7}
LIFESTYLE_RATE_MULT = {
    "budget": 0.9,
    "family": 1.1,
    "urban_professional": 1.05,
    "outdoor": 1.0,
    "tech_enthusiast": 1.1,
    "traditional": 0.85,
}
PRICE_SENSITIVITY_DROPOUT_LOGIT = 0.8  # logit(p) += this x (price_sensitivity - 0.5)
BUYER_SHARE = {"consumer": 0.85, "business": 0.9, "retailer": 0.95}
COMPLAINT_PROB_PER_ORDER = {"consumer": 0.03, "business": 0.05, "retailer": 0.05}
COMPLAINT_KEEP = 0.6  # after a complaint: 1 - p_after = (1 - p) x COMPLAINT_KEEP
LINES_EXTRA_MEAN = {"consumer": 0.7, "business": 2.0, "retailer": 3.0}  # lines per order = 1 + Poisson

CHANNELS = ("email", "sms", "phone", "mail")
CONSENT_BASE = {"email": 0.55, "sms": 0.25, "phone": 0.20, "mail": 0.45}
CONSENT_PREFERRED_BONUS = 0.30
EMAIL_DOUBLE_OPT_IN = 0.88
CONSENT_WITHDRAW = 0.08
OBJECTION_SHARE = 0.015
CAMPAIGN_REACH = {"email": 0.35, "sms": 0.12, "phone": 0.04, "mail": 0.10}  # of eligible, per month
CONTROL_SHARE = 0.15

# Response to an outbound contact (logit scale). Treated: base_channel + action + effects + u_i.
RESPONSE_BASE = {"email": -3.4, "sms": -3.2, "phone": -2.2, "mail": -3.0}
ORGANIC_BASE = -4.6  # control group: the response that happens without the contact
ACTIONS = {
    # action_id: (kind, channels, logit effect, category or None)
    **{f"xsell_{c}": ("cross_sell", ("email", "mail"), 0.0, c) for c in CATEGORIES},
    "retention_voucher": ("retention", ("email", "sms", "phone"), 0.5, None),
    "winback_voucher": ("win_back", ("email", "sms", "mail"), 0.3, None),
    "newsletter": ("newsletter", ("email",), -0.6, None),
    "service_call": ("service_follow_up", ("phone",), 0.2, None),
    "upsell_premium": ("upsell", ("phone", "mail"), -0.2, None),
}
RESPONSE_PREFERRED_CHANNEL = 1.2
RESPONSE_VOUCHER_PRICE_SENSITIVITY = 1.5  # x (price_sensitivity - 0.5), voucher actions
RESPONSE_AFFINITY = 1.0  # x log(8 * share of the action's category), cross-sell actions
RESPONSE_INDIVIDUAL_SD = 0.5
SURE_THING_ORGANIC = 4.4  # --sure-things: added to their organic logit (about 45% respond uncontacted)
RESPONSE_ORGANIC_INDIVIDUAL = 0.5  # share of the individual effect that also acts without contact
RESPONSE_DEAD = -2.5  # a customer who has silently left rarely responds
# Age effect per channel: young people answer sms/email, older ones mail and phone.
RESPONSE_AGE = {
    "email": (0.1, 0.1, 0.0, 0.0, -0.1, -0.3, 0.0),
    "sms": (0.5, 0.3, 0.0, -0.2, -0.4, -0.7, -0.2),
    "phone": (-0.5, -0.3, 0.0, 0.1, 0.3, 0.4, 0.2),
    "mail": (-0.5, -0.3, -0.1, 0.1, 0.3, 0.5, 0.0),
}
CONVERT_GIVEN_RESPONSE = 0.4

# ------------------------------------------------------------------------------------------- variants
# Options of ``kundenwert sample`` that mimic campaign data sets users bring; the default world uses
# none of them (and its random stream never sees them: they draw from a generator of their own).
# --max-calls N: a treated customer of a phone campaign is called again, CALL_GAP_DAYS apart, until
# they respond or N calls are made; call k responds with the first call's logit + CALL_LOGIT_DECAY (k-1).
CALL_GAP_DAYS = (2.0, 7.0)  # uniform
CALL_LOGIT_DECAY = -0.4
# --experiment: one randomised e-mail campaign (like the MineThatData/Hillstrom e-mail test) to every
# customer with valid e-mail consent on one day; a third held out. Outcomes: ``clicked`` (a visit) and
# ``converted`` (a purchase after the visit). Logits (u: individual responsiveness, dead: has left):
#   click, treated:   click_base + RESPONSE_PREFERRED_CHANNEL [email preferred] + RESPONSE_AGE[email]
#                     + u + click_price_sensitivity x (price_sensitivity - 0.5) + RESPONSE_DEAD dead
#   click, control:   click_organic_base + RESPONSE_ORGANIC_INDIVIDUAL u + RESPONSE_DEAD dead
#   convert | click:  convert_base (+ convert_treated + convert_price_sensitivity x (ps - 0.5) if treated)
#                     + convert_individual u + RESPONSE_DEAD dead
EXPERIMENT_CHANNEL = "email"
EXPERIMENT_ACTION = "retention_voucher"
EXPERIMENT: dict[str, float] = {
    "days_before_end": 30,
    "control_share": 1 / 3,
    "click_base": -1.8,
    "click_price_sensitivity": 1.5,
    "click_organic_base": -2.0,
    "convert_base": -2.0,
    "convert_treated": 0.6,
    "convert_price_sensitivity": 1.5,
    "convert_individual": 0.5,
}
