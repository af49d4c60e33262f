// Combiners and the target distribution (docs/combiners.md).
#pragma once

#include "cospec/combine/any_combiner.hpp"
#include "cospec/combine/callable_combiner.hpp"
#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_arithmetic.hpp"
#include "cospec/combine/logit_bias.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/combine/penalties.hpp"
#include "cospec/combine/proposal.hpp"
#include "cospec/combine/target.hpp"
#include "cospec/combine/weighted_ensemble.hpp"
