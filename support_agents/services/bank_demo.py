"""Demo bank data: catalogue (fees, products, limits, countries, currencies, incidents, knowledge
base) and, per customer, accounts, cards, transactions and pending transfers. Deterministic and
idempotent: `demo_seed()` calls `bank_demo_seed()` on every run."""

from __future__ import annotations

import datetime as dt
import random
import zlib
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from support_agents.models import (
    Account,
    Card,
    Customer,
    FeeSchedule,
    IdentityVerification,
    KnowledgeArticle,
    PendingTransfer,
    Product,
    ProductLimit,
    ServiceIncident,
    SupportedCountry,
    SupportedCurrency,
    Transaction,
)

D = Decimal

FEES = [
    (
        "card-payment-fx",
        "Foreign card payment fee",
        "Card payments in a currency other than your account's carry a 1% fee.",
        "0",
        "1",
    ),
    (
        "atm-withdrawal",
        "ATM withdrawal fee",
        "The first 200.00 GBP of ATM withdrawals each month are free; after that 2% applies.",
        "0",
        "2",
    ),
    (
        "exchange",
        "Currency exchange fee",
        "Exchanges in the app are free on weekdays; a 0.5% markup applies at weekends.",
        "0",
        "0.5",
    ),
    (
        "transfer-international",
        "International transfer fee",
        "International transfers cost a fixed 1.50 GBP.",
        "1.50",
        "0",
    ),
    (
        "top-up-card",
        "Card top-up fee",
        "Top-ups by debit card are free; credit card top-ups cost 0.7%.",
        "0",
        "0.7",
    ),
    ("top-up-bank-transfer", "Bank transfer top-up fee", "Top-ups by bank transfer are free.", "0", "0"),
    ("card-replacement", "Card replacement fee", "A replacement card costs 5.00 GBP.", "5.00", "0"),
]

PRODUCTS = [  # names match support_agents.language.PRODUCTS
    ("standard-card", "Standard card", "card", "0", "0", 18, 6, "Our free physical Visa debit card."),
    ("plus-card", "Plus card", "card", "2.99", "0", 18, 5, "Physical card with free travel insurance."),
    ("premium-card", "Premium card", "card", "6.99", "0", 18, 4, "Higher limits and priority support."),
    (
        "metal-card",
        "Metal card",
        "card",
        "12.99",
        "0",
        18,
        3,
        "A stainless steel card with the highest limits.",
    ),
    ("virtual-card", "Virtual card", "card", "0", "0", 18, 0, "A card in the app for online payments."),
    (
        "disposable-virtual-card",
        "Disposable virtual card",
        "card",
        "0",
        "0",
        18,
        0,
        "A virtual card whose number changes after every payment.",
    ),
    ("spare-card", "Spare card", "card", "0", "4.99", 18, 6, "An extra physical card on the same account."),
    ("savings-account", "Savings account", "plan", "0", "0", 16, 0, "A savings pot paying 3.1% a year."),
    ("joint-account", "Joint account", "plan", "0", "0", 18, 0, "One account shared by two people."),
    (
        "business-account",
        "Business account",
        "plan",
        "9.99",
        "0",
        18,
        0,
        "An account for companies and sole traders.",
    ),
    ("travel-insurance", "Travel insurance", "service", "3.50", "0", 18, 0, "Worldwide travel cover."),
    (
        "auto-top-up",
        "Auto top-up",
        "service",
        "0",
        "0",
        18,
        0,
        "Tops up your account automatically when the balance drops below a level you choose.",
    ),
]

LIMITS = [  # product, name, period, amount
    ("standard-card", "top_up", "month", "10000"),
    ("standard-card", "atm_withdrawal", "month", "400"),
    ("standard-card", "card_payment", "day", "5000"),
    ("plus-card", "atm_withdrawal", "month", "800"),
    ("premium-card", "atm_withdrawal", "month", "1200"),
    ("metal-card", "atm_withdrawal", "month", "2000"),
    ("disposable-virtual-card", "card_payment", "payment", "1000"),
    ("virtual-card", "card_payment", "day", "3000"),
]

COUNTRIES = [
    ("GB", "United Kingdom", 3),
    ("IE", "Ireland", 5),
    ("FR", "France", 5),
    ("DE", "Germany", 5),
    ("ES", "Spain", 6),
    ("IT", "Italy", 6),
    ("NL", "Netherlands", 5),
    ("PL", "Poland", 7),
    ("SE", "Sweden", 7),
    ("CH", "Switzerland", 8),
    ("US", "United States", 10),
]
NO_CARD_DELIVERY = {"US"}

CURRENCIES = [
    ("GBP", "British pound", "1.17", "0"),
    ("EUR", "Euro", "1", "0"),
    ("USD", "US dollar", "0.92", "0"),
    ("CHF", "Swiss franc", "1.05", "0.5"),
    ("PLN", "Polish zloty", "0.23", "0.5"),
    ("SEK", "Swedish krona", "0.087", "0.5"),
    ("JPY", "Japanese yen", "0.0061", "1"),
    ("AUD", "Australian dollar", "0.6", "1"),
    ("CAD", "Canadian dollar", "0.68", "1"),
]

INCIDENTS = [
    (
        "transfers",
        "Delays on international transfers",
        "monitoring",
        "Some international transfers are arriving up to one day late; no money is lost.",
    )
]

# One short article per intent family; the procedures quote them as facts.
KB = {
    "Refund_not_showing_up": "Refunds from merchants take 3 to 5 business days to appear after the merchant sends them.",
    "balance_not_updated_after_bank_transfer": "Incoming bank transfers usually arrive within 2 hours; SEPA transfers can take 1 business day.",
    "balance_not_updated_after_cheque_or_cash_deposit": "Cash and cheque deposits at partner banks are credited within 2 business days.",
    "cancel_transfer": "A transfer can be cancelled while it is still pending; once sent it cannot be recalled.",
    "card_payment_not_recognised": "If you do not recognise a card payment, freeze your card in the app and we will open a dispute.",
    "card_payment_wrong_exchange_rate": "Card payments use the network rate at the moment the merchant settles, which can differ from the rate shown at purchase.",
    "cash_withdrawal_not_recognised": "If you did not make a cash withdrawal, freeze your card and we will investigate with the ATM operator.",
    "direct_debit_payment_not_recognised": "You can cancel a direct debit in the app and claim an indemnity refund for unauthorised payments.",
    "exchange_charge": "Exchanges are free on weekdays; a small markup covers weekend exchanges when markets are closed.",
    "pending_card_payment": "A pending card payment is an authorisation; declined or cancelled payments drop off within 7 days.",
    "pending_cash_withdrawal": "Pending cash withdrawals complete within 3 business days or are returned automatically.",
    "pending_top_up": "Top-ups can stay pending for up to 2 hours while the card issuer confirms them.",
    "pending_transfer": "Transfers stay pending while they are checked; most complete the same day.",
    "reverted_card_payment?": "A reverted payment means the merchant cancelled it; the money returns to your balance.",
    "top_up_by_bank_transfer_charge": "Topping up by bank transfer is free.",
    "top_up_by_card_charge": "Debit card top-ups are free; credit card top-ups carry a small fee.",
    "top_up_reverted": "A top-up is reverted when the card issuer declines it; try another card or a bank transfer.",
    "transaction_charged_twice": "A duplicate charge is usually a pending authorisation that drops off; confirmed duplicates are refunded.",
    "transfer_not_received_by_recipient": "If the recipient has not received a completed transfer, ask them to check with their bank using the transfer reference.",
    "wrong_amount_of_cash_received": "If an ATM gave you the wrong amount, we open a claim with the ATM operator; it takes up to 10 business days.",
    "wrong_exchange_rate_for_cash_withdrawal": "ATM withdrawals abroad use the network rate; the ATM operator may add its own fee.",
    "activate_my_card": "Activate your card in the app under Cards > Activate, using the code on the letter.",
    "apple_pay_or_google_pay": "Add your card to Apple Pay or Google Pay from the card screen in the app.",
    "beneficiary_not_allowed": "Some beneficiaries are blocked by our safety checks; verify the account details or contact us to review it.",
    "card_linking": "You can link an existing card to the app by scanning it under Cards > Link card.",
    "card_not_working": "If your card is not working, check that it is active and not frozen, then try a chip and PIN payment.",
    "card_swallowed": "If an ATM kept your card, freeze it in the app and order a replacement.",
    "change_pin": "You can change your PIN at any ATM that offers PIN services.",
    "compromised_card": "If your card may be compromised, we freeze it at once and send a new card with a new number.",
    "contactless_not_working": "Contactless starts working after your first chip and PIN payment.",
    "declined_card_payment": "Card payments are declined when the card is frozen, the balance is too low or the merchant is blocked.",
    "declined_cash_withdrawal": "Cash withdrawals are declined when the daily ATM limit is reached or the PIN is wrong.",
    "declined_transfer": "Transfers are declined until your identity is verified or when a safety check fails.",
    "edit_personal_details": "Change your address and phone number in the app under Profile; name changes need a document.",
    "failed_transfer": "A failed transfer is returned to your balance within 1 business day.",
    "lost_or_stolen_card": "If your card is lost or stolen, we freeze it and send a replacement.",
    "lost_or_stolen_phone": "If your phone is lost, log in from another device and sign out the lost one under Security.",
    "passcode_forgotten": "Reset your passcode from the login screen with your email and a selfie check.",
    "pin_blocked": "A PIN is blocked after three wrong tries; verified customers can unblock it in the app.",
    "top_up_failed": "Top-ups fail when the card issuer declines them; try again or use a bank transfer.",
    "unable_to_verify_identity": "Identity checks need a valid passport or ID card and a clear selfie in good light.",
    "verify_my_identity": "Verify your identity in the app under Profile > Verify, with a passport or ID card.",
    "verify_source_of_funds": "We may ask for a payslip or bank statement to confirm where money comes from.",
    "verify_top_up": "We may ask you to confirm a card top-up with a small verification charge.",
    "virtual_card_not_working": "Virtual cards work online only; check the card is active in the app.",
    "why_verify_identity": "The law requires us to verify every customer's identity to prevent fraud.",
    "age_limit": "You must be 18 or older to open an account.",
    "atm_support": "Our cards work at any ATM showing the Visa or Mastercard logo.",
    "automatic_top_up": "Auto top-up refills your balance from a linked card when it drops below your chosen level.",
    "card_about_to_expire": "We send a new card automatically a month before the old one expires.",
    "card_acceptance": "Our cards are accepted wherever Visa or Mastercard is accepted.",
    "card_arrival": "Cards arrive within the delivery time for your country; you can track the delivery in the app.",
    "card_delivery_estimate": "Delivery times depend on the country; most cards arrive within a week.",
    "country_support": "You can open an account if you live in one of our supported countries.",
    "disposable_card_limits": "Disposable virtual cards can be used once per card number, up to the payment limit.",
    "exchange_rate": "We use the interbank rate for exchanges in the app.",
    "exchange_via_app": "You can exchange between supported currencies in the app at any time.",
    "fiat_currency_support": "You can hold and exchange all of our supported currencies.",
    "get_disposable_virtual_card": "Create a disposable virtual card in the app under Cards > New.",
    "get_physical_card": "Order a physical card in the app under Cards > Order.",
    "getting_spare_card": "You can order a spare card on the same account in the app.",
    "getting_virtual_card": "Create a virtual card instantly in the app.",
    "order_physical_card": "Physical cards are ordered in the app and delivered by post.",
    "receiving_money": "Share your account details from the app to receive money in any supported currency.",
    "supported_cards_and_currencies": "You can top up with Visa or Mastercard cards and hold all supported currencies.",
    "top_up_by_cash_or_cheque": "Cash and cheque top-ups are possible at partner banks.",
    "top_up_limits": "Top-up limits depend on your card plan.",
    "topping_up_by_card": "Top up with a debit or credit card in the app under Add money.",
    "transfer_into_account": "Transfer money in from another bank using your account number and sort code.",
    "transfer_timing": "Domestic transfers arrive within 2 hours; international ones take 1 to 3 business days.",
    "visa_or_mastercard": "Our standard cards are Visa; Premium and Metal cards are Mastercard.",
}

MERCHANTS = [
    "Tesco",
    "Amazon",
    "Uber",
    "Netflix",
    "Spotify",
    "Pret A Manger",
    "Zara",
    "Apple",
    "Ryanair",
    "IKEA",
    "Deliveroo",
    "Boots",
]


@transaction.atomic
def bank_catalog_seed() -> None:
    fees = {}
    for code, name, desc, fixed, pct in FEES:
        fees[code], _ = FeeSchedule.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "description": desc,
                "fixed_amount": D(fixed),
                "percent": D(pct),
                "currency": "GBP",
            },
        )
    for code, name, kind, monthly, issue, age, days, desc in PRODUCTS:
        Product.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "kind": kind,
                "monthly_fee": D(monthly),
                "issue_fee": D(issue),
                "min_age": age,
                "delivery_days": days,
                "description": desc,
                "currency": "GBP",
            },
        )
    for code, name, period, amount in LIMITS:
        ProductLimit.objects.update_or_create(
            product=Product.objects.get(code=code),
            name=name,
            period=period,
            defaults={"amount": D(amount), "currency": "GBP"},
        )
    for code, name, days in COUNTRIES:
        SupportedCountry.objects.update_or_create(
            code=code,
            defaults={"name": name, "delivery_days": days, "card_delivery": code not in NO_CARD_DELIVERY},
        )
    for code, name, rate, markup in CURRENCIES:
        SupportedCurrency.objects.update_or_create(
            code=code, defaults={"name": name, "rate_to_eur": D(rate), "exchange_markup_percent": D(markup)}
        )
    now = timezone.now()
    for comp, title, status, msg in INCIDENTS:
        ServiceIncident.objects.get_or_create(
            title=title,
            defaults={
                "component": comp,
                "status": status,
                "customer_message": msg,
                "started_at": now - dt.timedelta(hours=5),
            },
        )
    for intent, body in KB.items():
        slug = intent.lower().replace("?", "").replace("_", "-")
        KnowledgeArticle.objects.update_or_create(
            slug=slug,
            defaults={
                "title": intent.replace("_", " ").rstrip("?").capitalize(),
                "body": body,
                "intents": [intent],
            },
        )


def _rng(customer: Customer) -> random.Random:
    return random.Random(zlib.crc32(customer.email.encode()))


@transaction.atomic
def bank_customer_seed(customer: Customer, *, transactions: int = 12) -> Account:
    """Give a customer an account, cards, transactions and one pending transfer (idempotent)."""
    existing = Account.objects.filter(customer=customer).first()
    if existing is not None:
        return existing
    rng = _rng(customer)
    now = timezone.now()
    acc = Account.objects.create(
        customer=customer,
        number=f"GB{rng.randrange(10**12, 10**13)}{customer.pk:06d}",
        currency="GBP",
        balance=D(rng.randrange(20000, 500000)) / 100,
        opened_at=now - dt.timedelta(days=rng.randrange(60, 900)),
    )
    card = Card.objects.create(
        customer=customer,
        account=acc,
        last4=f"{rng.randrange(10**4):04d}",
        kind=Card.Kind.PHYSICAL,
        network="visa",
        status=Card.Status.ACTIVE,
        expires_on=(now + dt.timedelta(days=rng.randrange(30, 1000))).date(),
        issued_at=now,
    )
    Card.objects.create(
        customer=customer,
        account=acc,
        last4=f"{rng.randrange(10**4):04d}",
        kind=Card.Kind.VIRTUAL,
        network="visa",
        status=Card.Status.ACTIVE,
        expires_on=(now + dt.timedelta(days=900)).date(),
        issued_at=now - dt.timedelta(days=1),
    )
    fees = {f.code: f for f in FeeSchedule.objects.all()}
    kinds = [
        ("card_payment", None),
        ("card_payment", "card-payment-fx"),
        ("cash_withdrawal", "atm-withdrawal"),
        ("transfer", "transfer-international"),
        ("top_up", None),
        ("direct_debit", None),
    ]
    for i in range(transactions):
        kind, fee_code = kinds[i % len(kinds)]
        amount = D(rng.randrange(300, 25000)) / 100
        fee = (
            (amount * fees[fee_code].percent / 100 + fees[fee_code].fixed_amount).quantize(D("0.01"))
            if fee_code and fee_code in fees
            else D(0)
        )
        Transaction.objects.create(
            account=acc,
            card=card if kind in ("card_payment", "cash_withdrawal") else None,
            reference=f"TX{customer.pk:06d}{i:04d}",
            kind=kind,
            merchant=rng.choice(MERCHANTS) if kind in ("card_payment", "direct_debit") else "",
            amount=amount,
            currency="GBP",
            fee=fee,
            fee_code=fees.get(fee_code) if fee_code else None,
            status="pending" if i % 7 == 3 else "completed",
            created_at=now - dt.timedelta(days=i, hours=rng.randrange(24)),
        )
    PendingTransfer.objects.create(
        account=acc,
        reference=f"PT{customer.pk:06d}",
        recipient="J. Doe",
        amount=D(rng.randrange(1000, 50000)) / 100,
        currency="GBP",
        created_at=now,
        expected_at=now + dt.timedelta(hours=20),
    )
    IdentityVerification.objects.get_or_create(
        customer=customer,
        defaults={
            "status": rng.choice(["verified", "verified", "pending", "rejected"]),
            "reason": "document photo was blurry",
        },
    )
    return acc


def bank_demo_seed() -> int:
    """Catalogue + bank data for every customer without an account; returns customers seeded."""
    bank_catalog_seed()
    n = 0
    for customer in Customer.objects.filter(accounts__isnull=True).order_by("pk"):
        bank_customer_seed(customer)
        n += 1
    return n
