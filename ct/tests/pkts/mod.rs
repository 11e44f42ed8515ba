// placeholder until the shared builder lands
