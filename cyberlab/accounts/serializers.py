from django.contrib.auth.validators import UnicodeUsernameValidator
from rest_framework import serializers


class RegisterSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = serializers.EmailField()
    password = serializers.CharField(max_length=128, write_only=True, style={"input_type": "password"})


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True, style={"input_type": "password"})


class PasswordChangeSerializer(serializers.Serializer):
    old_password = serializers.CharField(max_length=128, write_only=True)
    new_password = serializers.CharField(max_length=128, write_only=True)


class ProfileSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    display_name = serializers.CharField()
    is_staff = serializers.BooleanField()
    points = serializers.IntegerField()


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class PasswordChangedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    token = serializers.CharField(allow_null=True)


class SessionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    user_agent = serializers.CharField()
    ip = serializers.IPAddressField(allow_null=True)
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    current = serializers.BooleanField()


class SessionsRevokedSerializer(serializers.Serializer):
    revoked = serializers.IntegerField()
    token = serializers.CharField(allow_null=True)
