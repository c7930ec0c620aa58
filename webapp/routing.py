from django.urls import path

from webapp.console import consumers

websocket_urlpatterns = [
    path("ws/console/inbox/", consumers.InboxConsumer.as_asgi()),
    path("ws/console/tickets/<int:ticket_id>/", consumers.TicketConsumer.as_asgi()),
]
