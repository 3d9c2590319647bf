"""EHR adapters: one interface (`adapters.base.Adapter`), one implementation per kind of EHR."""
