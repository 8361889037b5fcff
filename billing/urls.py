from django.urls import path

from billing import api

urlpatterns = [
    path("billing/accounts", api.AccountsView.as_view(), name="billing-accounts"),
    path("billing/accounts/<int:account_id>", api.AccountView.as_view(), name="billing-account"),
    path(
        "billing/accounts/<int:account_id>/plan",
        api.AccountPlanView.as_view(),
        name="billing-account-plan",
    ),
    path(
        "billing/accounts/<int:account_id>/invoices",
        api.AccountInvoicesView.as_view(),
        name="billing-invoices",
    ),
    path("billing/messages", api.MessagesView.as_view(), name="billing-messages"),
    path("billing/products", api.ProductsView.as_view(), name="billing-products"),
    path("billing/purchases", api.PurchasesView.as_view(), name="billing-purchases"),
    path(
        "billing/purchases/<str:purchase_id>/refunds",
        api.RefundsView.as_view(),
        name="billing-refunds",
    ),
    path("billing/gateway-events", api.GatewayEventsView.as_view(), name="billing-gateway-events"),
]
