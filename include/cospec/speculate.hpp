// Speculation policies (docs/engine.md).
#pragma once

#include "cospec/speculate/adaptive.hpp"
#include "cospec/speculate/alternating.hpp"
#include "cospec/speculate/any_speculator.hpp"
#include "cospec/speculate/automatic.hpp"
#include "cospec/speculate/context_lookup.hpp"
#include "cospec/speculate/context_proposals.hpp"
#include "cospec/speculate/fixed_proposer.hpp"
#include "cospec/speculate/mixture_sampling.hpp"
#include "cospec/speculate/pass_cost_fit.hpp"
#include "cospec/speculate/speculator.hpp"
#include "cospec/speculate/standard.hpp"
