from django.urls import include, path

from vms import api

# Grouped by their first segments, as in labs.urls.
urlpatterns = [
    path(
        "labs/<int:lab_id>/vm/",
        include(
            [
                path("", api.LabMachineApi.as_view(), name="lab-vm"),
                path("extend/", api.LabMachineExtendApi.as_view(), name="lab-vm-extend"),
                path("reset/", api.LabMachineResetApi.as_view(), name="lab-vm-reset"),
            ]
        ),
    ),
    path(
        "vms/",
        include(
            [
                path("", api.MyMachinesApi.as_view(), name="my-vms"),
                path("<uuid:session_id>/", api.MyMachineApi.as_view(), name="my-vm"),
            ]
        ),
    ),
    path(
        "admin/vms/",
        include(
            [
                path("", api.AdminMachinesApi.as_view(), name="admin-vms"),
                path("<uuid:session_id>/", api.AdminMachineApi.as_view(), name="admin-vm"),
            ]
        ),
    ),
]
