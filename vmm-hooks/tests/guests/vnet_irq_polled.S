/* vnet_irq.S without the handover: the device stays polled. */
#define POLLED
#include "vnet_irq.S"
