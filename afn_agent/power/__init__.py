"""Machine power under the agent's control: switches (GPIO, Tasmota, Shelly, simulated), one plug
thread per powered machine, the rules of when a machine is powered, and the keeper applying them."""
