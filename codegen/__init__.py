"""Client side of siq: lowering to an integer model, memory plan, bit packing, C rendering, host/target builds."""
