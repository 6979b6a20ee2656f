from django.urls import path

from vms import api

# Flat, with a machine's status (the SPA polls it) first: each level of include costs
# more than the few patterns tried before it.
urlpatterns = [
    path("labs/<int:lab_id>/vm/", api.LabMachineApi.as_view(), name="lab-vm"),
    path("labs/<int:lab_id>/vm/extend/", api.LabMachineExtendApi.as_view(), name="lab-vm-extend"),
    path("labs/<int:lab_id>/vm/reset/", api.LabMachineResetApi.as_view(), name="lab-vm-reset"),
    path("vms/", api.MyMachinesApi.as_view(), name="my-vms"),
    path("vms/<uuid:session_id>/", api.MyMachineApi.as_view(), name="my-vm"),
    path("admin/vms/", api.AdminMachinesApi.as_view(), name="admin-vms"),
    path("admin/vms/<uuid:session_id>/", api.AdminMachineApi.as_view(), name="admin-vm"),
    path("admin/vms/<uuid:session_id>/access/", api.AdminMachineAccessApi.as_view(), name="admin-vm-access"),
]
