"""The processes: the pre-fork supervisor, the workers and the admin/stats process."""
