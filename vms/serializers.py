"""What the machine endpoints send: each view renders a `vms.state.MachineState` here."""

from rest_framework import serializers


class MachinePortSerializer(serializers.Serializer):
    port = serializers.IntegerField(help_text="The machine's port.")
    host_port = serializers.IntegerField(help_text="Where it is published on the host.")
    protocol = serializers.ChoiceField(choices=["tcp", "http", "ssh"])
    address = serializers.CharField(help_text="Ready to use: `nc host port`, a URL, or an ssh command.")


class MachineConnectionSerializer(serializers.Serializer):
    host = serializers.CharField()
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


class StaffMachineStateSerializer(MachineStateSerializer):
    user_id = serializers.IntegerField()
    provider = serializers.CharField()
    instance_id = serializers.CharField()
