"""The billing endpoints of the REST API (`/api/v1/billing/…`).

Views validate input and shape output; every change is made by `billing.services`.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services
from billing.choices import (
    CURRENCY_CHOICES,
    AccountKind,
    FreeReason,
    GatewayStatus,
    InvoiceKind,
    LineKind,
    PricedCategory,
    ProductType,
    PurchaseStatus,
    TemplateCategory,
)
from billing.models import BillingAccount, Invoice, MessageCharge, Product, Purchase, Refund
from consent.api import problems
from consent.choices import Scope
from consent.problems import CursorPage, StrictSerializer

READ, WRITE = Scope.BILLING_READ.value, Scope.BILLING_WRITE.value


def money(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=6, **kwargs)


# --- accounts ----------------------------------------------------------------------------


class PlanSubscriptionOut(serializers.Serializer):
    plan = serializers.CharField(source="plan.code")
    next_plan = serializers.CharField(source="next_plan.code", allow_null=True)
    monthly_price = money()
    currency = serializers.CharField()
    current_period_start = serializers.DateTimeField()
    current_period_end = serializers.DateTimeField()


class AccountOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=AccountKind.choices)
    name = serializers.CharField()
    country = serializers.CharField()
    currency = serializers.CharField()
    plan = serializers.SerializerMethodField()
    verified_badge = serializers.BooleanField()
    subscription = serializers.SerializerMethodField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_plan(self, account: BillingAccount) -> str | None:
        subscription = selectors.active_subscription(account)
        return subscription.plan.code if subscription else None

    @extend_schema_field(PlanSubscriptionOut(allow_null=True))
    def get_subscription(self, account: BillingAccount) -> dict[str, Any] | None:
        subscription = selectors.active_subscription(account)
        return PlanSubscriptionOut(subscription).data if subscription else None


class AccountIn(StrictSerializer):
    kind = serializers.ChoiceField(choices=AccountKind.choices, default=AccountKind.BUSINESS)
    name = serializers.CharField(max_length=120)
    country = serializers.CharField(max_length=2, min_length=2)
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    plan = serializers.SlugField(max_length=32, required=False, help_text="Default: free.")


class PlanIn(StrictSerializer):
    plan = serializers.SlugField(max_length=32)


class AccountsView(generics.ListAPIView):
    required_scopes = {"GET": READ, "POST": WRITE}
    serializer_class = AccountOut
    pagination_class = CursorPage

    def get_queryset(self) -> QuerySet[BillingAccount]:
        return selectors.accounts()

    @extend_schema(
        operation_id="billing_accounts_list",
        summary="Billing accounts of businesses and advertisers, newest first",
        responses={200: AccountOut(many=True), **problems(400)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="billing_accounts_create",
        request=AccountIn,
        responses={201: AccountOut, **problems(400, 409)},
        summary="Open a billing account on a plan (a paid plan is charged, prorated)",
    )
    def post(self, request: Request) -> Response:
        data = AccountIn(data=request.data)
        data.is_valid(raise_exception=True)
        account = services.create_account(**data.validated_data)
        return Response(AccountOut(selectors.get_account(account_id=account.pk)).data, status=201)


class AccountView(APIView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="billing_accounts_retrieve",
        responses={200: AccountOut, **problems(404)},
        summary="A billing account with its plan",
    )
    def get(self, request: Request, account_id: int) -> Response:
        return Response(AccountOut(selectors.get_account(account_id=account_id)).data)


class AccountPlanView(APIView):
    required_scopes = {"PUT": WRITE}

    @extend_schema(
        operation_id="billing_accounts_plan",
        request=PlanIn,
        responses={200: AccountOut, **problems(400, 404, 409)},
        summary="Change plan: an upgrade now (prorated), a downgrade or the free plan "
        "(cancellation) at the end of the period",
    )
    def put(self, request: Request, account_id: int) -> Response:
        data = PlanIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.change_plan(account_id=account_id, plan=data.validated_data["plan"])
        return Response(AccountOut(selectors.get_account(account_id=account_id)).data)


# --- message charges ---------------------------------------------------------------------


class MessageIn(StrictSerializer):
    message_id = serializers.CharField(max_length=128)
    account = serializers.IntegerField(min_value=1, help_text="The billing account's id.")
    category = serializers.ChoiceField(choices=TemplateCategory.choices)
    template = serializers.CharField(
        max_length=128, required=False, allow_blank=True, allow_null=True, default=""
    )
    recipient_country = serializers.CharField(max_length=2, min_length=2)
    recipient = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="The recipient's opaque account id: lets apps that know entry point "
        "windows (click-to-chat ads) answer for it.",
    )
    delivered_at = serializers.DateTimeField()
    service_window_open = serializers.BooleanField()
    entry_point_window_open = serializers.BooleanField()

    def validate_template(self, value: str | None) -> str:
        return value or ""


class ChargeOut(serializers.Serializer):
    charge_id = serializers.IntegerField(source="id")
    message_id = serializers.CharField()
    amount = money()
    currency = serializers.CharField()
    category = serializers.ChoiceField(choices=PricedCategory.choices)
    market = serializers.CharField()
    free_reason = serializers.SerializerMethodField()
    rate = money()
    rate_card = serializers.DateField(source="rate_card.effective_from")
    delivered_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ChoiceField(choices=FreeReason.choices, allow_null=True))
    def get_free_reason(self, charge: MessageCharge) -> str | None:
        return charge.free_reason or None


class MessagesView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="billing_messages_charge",
        request=MessageIn,
        responses={201: ChargeOut, 200: ChargeOut, **problems(400, 404, 409)},
        summary="Price a delivered message (idempotent on message_id; 200 on a replay)",
    )
    def post(self, request: Request) -> Response:
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        charge, created = services.charge_message(account_id=values.pop("account"), **values)
        return Response(ChargeOut(charge).data, status=201 if created else 200)


# --- digital goods -----------------------------------------------------------------------


class ProductIn(StrictSerializer):
    seller = serializers.IntegerField(min_value=1)
    type = serializers.ChoiceField(choices=ProductType.choices)
    title = serializers.CharField(max_length=120)
    price = money(min_value=0)


class ProductOut(serializers.ModelSerializer):
    price = money()

    class Meta:
        model = Product
        fields = ["id", "seller", "type", "title", "price", "currency", "is_active"]


class ProductsView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="billing_products_create",
        request=ProductIn,
        responses={201: ProductOut, **problems(400, 404, 409)},
        summary="A product a business sells in chat, in the seller's currency",
    )
    def post(self, request: Request) -> Response:
        data = ProductIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        product = services.create_product(seller_id=values.pop("seller"), **values)
        return Response(ProductOut(product).data, status=201)


class PurchaseIn(StrictSerializer):
    purchase_id = serializers.CharField(max_length=128)
    product = serializers.IntegerField(min_value=1)
    buyer = serializers.CharField(max_length=64)
    payment_method = serializers.CharField(
        max_length=64,
        default="sandbox_ok",
        help_text="Gateway token of the buyer's payment method (sandbox: sandbox_ok, "
        "sandbox_declined, sandbox_pending).",
    )
    gateway = serializers.CharField(max_length=32, default="sandbox")


class PurchaseOut(serializers.ModelSerializer):
    product = serializers.IntegerField(source="product_id")
    seller = serializers.IntegerField(source="seller_id")
    amount = money()
    commission = money()
    refunded = money()
    commission_reversed = money()
    status = serializers.ChoiceField(choices=PurchaseStatus.choices)

    class Meta:
        model = Purchase
        fields = [
            "purchase_id",
            "product",
            "seller",
            "buyer",
            "amount",
            "currency",
            "commission_rate",
            "commission",
            "refunded",
            "commission_reversed",
            "status",
            "gateway",
            "gateway_reference",
            "created_at",
            "captured_at",
        ]


class PurchasesView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="billing_purchases_create",
        request=PurchaseIn,
        responses={201: PurchaseOut, 200: PurchaseOut, **problems(400, 404, 409)},
        summary="Buy a product through the payment gateway (idempotent on purchase_id)",
    )
    def post(self, request: Request) -> Response:
        data = PurchaseIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        bought, created = services.purchase(product_id=values.pop("product"), **values)
        return Response(PurchaseOut(bought).data, status=201 if created else 200)


class RefundIn(StrictSerializer):
    refund_id = serializers.CharField(max_length=128)
    amount = money(required=False, help_text="Default: all that is left.")


class RefundOut(serializers.ModelSerializer):
    purchase_id = serializers.CharField(source="purchase.purchase_id")
    amount = money()
    commission_reversed = money()

    class Meta:
        model = Refund
        fields = [
            "refund_id",
            "purchase_id",
            "amount",
            "commission_reversed",
            "currency",
            "gateway_reference",
            "created_at",
        ]


class RefundsView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="billing_purchases_refund",
        request=RefundIn,
        responses={201: RefundOut, 200: RefundOut, **problems(400, 404, 409)},
        summary="Refund a purchase in full or in part; the commission is reversed in "
        "proportion (idempotent on refund_id)",
    )
    def post(self, request: Request, purchase_id: str) -> Response:
        data = RefundIn(data=request.data)
        data.is_valid(raise_exception=True)
        made, created = services.refund(purchase_id=purchase_id, **data.validated_data)
        return Response(RefundOut(made).data, status=201 if created else 200)


class GatewayEventIn(StrictSerializer):
    gateway = serializers.CharField(max_length=32)
    reference = serializers.CharField(max_length=128)
    status = serializers.ChoiceField(choices=GatewayStatus.choices)


class GatewayEventsView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="billing_gateway_events",
        request=GatewayEventIn,
        responses={200: PurchaseOut, **problems(400, 404, 409)},
        summary="A payment gateway's status update for a purchase (captured or failed)",
    )
    def post(self, request: Request) -> Response:
        data = GatewayEventIn(data=request.data)
        data.is_valid(raise_exception=True)
        bought = services.apply_gateway_event(**data.validated_data)
        return Response(PurchaseOut(bought).data)


# --- invoices ----------------------------------------------------------------------------


class LineOut(serializers.Serializer):
    position = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=LineKind.choices)
    description = serializers.CharField()
    market = serializers.CharField()
    category = serializers.CharField()
    quantity = serializers.IntegerField()
    exact_amount = money()
    amount = money()


class InvoiceOut(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.CharField()
    kind = serializers.ChoiceField(choices=InvoiceKind.choices)
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    currency = serializers.CharField()
    total = money()
    credits = serializers.CharField(source="credits.number", allow_null=True)
    issued_at = serializers.DateTimeField()
    lines = LineOut(many=True)


class AccountInvoicesView(generics.ListAPIView):
    required_scopes = {"GET": READ}
    serializer_class = InvoiceOut
    pagination_class = CursorPage

    def get_queryset(self) -> QuerySet[Invoice]:
        return selectors.account_invoices(account_id=self.kwargs["account_id"])

    @extend_schema(
        operation_id="billing_invoices_list",
        summary="An account's invoices and credit notes with their lines, newest first",
        responses={200: InvoiceOut(many=True), **problems(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
