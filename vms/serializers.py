"""What the machine endpoints send: each view renders a `vms.state.MachineState` here.

Given the request in its context (the owner's own views), HTTP ports carry entry links."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from vms import gateway


class MachinePortSerializer(serializers.Serializer):
    port = serializers.IntegerField(help_text="The machine's port.")
    host_port = serializers.IntegerField(
        required=False, help_text="Where it is published on the lab host (with VM_PUBLISH_PORTS=1)."
    )
    protocol = serializers.ChoiceField(choices=["tcp", "http", "ssh"])
    address = serializers.CharField(
        required=False,
        help_text="With VM_PUBLISH_PORTS=1: ready to use, `nc host port`, a URL, or an ssh command.",
    )
    url = serializers.CharField(
        required=False,
        help_text="For the owner, through the gateway. HTTP ports: a single-use entry link to the "
        "machine's own origin, valid for VM_GATEWAY_ENTRY_TTL seconds. Other ports: the WebSocket "
        "URL (`ws(s)://{name}.../_tcp/{port}`) carrying the port's raw bytes in binary frames.",
    )
    token = serializers.CharField(
        required=False, help_text="TCP ports: the bearer token the WebSocket URL wants (Authorization)."
    )
    command = serializers.CharField(
        required=False,
        help_text="TCP ports: a ready-to-paste command opening the port on this computer (the "
        "shipped `python -m vms.tunnel`; websocat --binary with the bearer token works too).",
    )


class MachineConnectionSerializer(serializers.Serializer):
    host = serializers.CharField(required=False, help_text="The lab host (with VM_PUBLISH_PORTS=1).")
    ports = MachinePortSerializer(many=True)


class MachineStateSerializer(serializers.Serializer):
    session_id = serializers.UUIDField()
    lab_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["provisioning", "running", "stopping", "stopped", "failed"])
    connection = MachineConnectionSerializer(allow_null=True, help_text="Present once running.")
    started_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    seconds_left = serializers.IntegerField()
    renewals = serializers.IntegerField()
    renewals_left = serializers.IntegerField()
    can_extend = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True, help_text="Why a start failed.")

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is not None and data["connection"] is not None:
            links = gateway.links(
                request=request,
                connection=instance.connection,
                session_id=instance.session_id,
                user_id=instance.user_id,
            )
            for port in data["connection"]["ports"]:
                port.update(links.get(port["port"], {}))
        return data


class StaffMachineStateSerializer(MachineStateSerializer):
    user_id = serializers.IntegerField()
    provider = serializers.CharField()
    instance_id = serializers.CharField()
    last_activity_at = serializers.SerializerMethodField(
        help_text="When the gateway last carried traffic for it (or it started); null when unknown."
    )

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_activity_at(self, instance):
        seen = self.context.get("last_activity", {}).get((instance.user_id, instance.lab_id))
        return serializers.DateTimeField().to_representation(seen) if seen is not None else None


class StaffAccessRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, help_text="Why staff enter this learner's machine; recorded with the access."
    )


class StaffAccessSerializer(serializers.Serializer):
    """A recorded staff access and the links it gives: the same shapes as the owner's."""

    access_id = serializers.IntegerField(source="pk")
    session_id = serializers.UUIDField()
    user_id = serializers.IntegerField(source="session.user_id", help_text="The machine's owner.")
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    ports = serializers.SerializerMethodField()

    @extend_schema_field(MachinePortSerializer(many=True))
    def get_ports(self, access):
        session = access.session
        found = gateway.links(
            request=self.context["request"],
            connection=session.connection,
            session_id=str(session.pk),
            user_id=session.user_id,
            access=access.pk,
        )
        ports = MachinePortSerializer(session.connection.get("ports", []), many=True).data
        return [{**port, **found.get(port["port"], {})} for port in ports]
