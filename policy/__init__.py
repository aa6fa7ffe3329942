"""The smoker-infra CrossGuard policy pack (`pulumi preview --policy-pack policy`)."""
