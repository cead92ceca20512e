"""The HTTP gateway: starts chats, answers progress, serves chunks by cursor."""
